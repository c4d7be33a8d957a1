"""The PaaS's instance fields end to end, through the real server, agent and dockerd:
create with env, a config file and an HTTP health check, see it go healthy, rebuild it
onto another image keeping its IP and MAC, see the rebuilt one go healthy again."""

from __future__ import annotations

import tarfile

import pytest

from dockyard.images import rootfs, tarball
from tests.integration.cluster import wait_for

pytestmark = pytest.mark.root

RC_LOCAL = """#!/bin/sh
mkdir -p /www && echo "$APP_MODE $(cat /etc/release 2>/dev/null)" > /www/index.html
httpd -p 8080 -h /www
"""
CHECK = {"kind": "http", "port": 8080, "path": "/index.html", "interval_s": 0.5}


def _show(cluster, iid: str) -> dict:
    return cluster.api("GET", f"/instances/{iid}")


def _healthy(cluster, iid: str) -> bool:
    shown = _show(cluster, iid)
    return shown["task_state"] is None and (shown.get("health") or {}).get("status") == "healthy"


def test_create_with_env_file_and_check_goes_healthy_and_a_rebuild_keeps_ip_and_mac(cluster):
    tar = cluster.root / "demo2.tar"
    rootfs.build(tar)
    with tarfile.open(tar, "a") as t:
        tarball.add_file(t, "etc/release", b"v2\n", 0o644)
    cluster.cli("image", "import", "demo2", "--rootfs", str(tar))
    body = {
        "name": "paas1", "image": "demo", "flavor": "small", "network": "net",
        "env": {"APP_MODE": "blue"},
        "files": [{"path": "/etc/rc.local", "content": RC_LOCAL, "mode": 0o755}],
        "health_check": CHECK,
    }  # fmt: skip
    iid = cluster.api("POST", "/instances", json=body)["id"]
    wait_for(lambda: _healthy(cluster, iid), 90, "the instance to be healthy")
    before = _show(cluster, iid)
    c = cluster.container(iid)
    assert c.exec_run("wget -q -O - http://127.0.0.1:8080/").output == b"blue \n"
    assert cluster.probe.ping(before["ip"])

    cluster.api("POST", f"/instances/{iid}/rebuild",
                json={"image": "demo2", "env": {"APP_MODE": "green"}})  # fmt: skip
    wait_for(lambda: _show(cluster, iid)["task_state"] is None, 90, "the rebuild to end")
    wait_for(lambda: _healthy(cluster, iid), 90, "the rebuilt instance to be healthy")
    after = _show(cluster, iid)
    assert (after["ip"], after["mac"], after["hostname"]) == (
        before["ip"], before["mac"], before["hostname"]
    )  # fmt: skip
    c = cluster.container(iid)
    assert c.exec_run("wget -q -O - http://127.0.0.1:8080/").output == b"green v2\n"
    mac = c.exec_run("cat /sys/class/net/eth0/address").output.decode().strip()
    assert mac == before["mac"] and cluster.probe.ping(after["ip"])
    cluster.cli("server", "delete", "paas1", "--wait")
