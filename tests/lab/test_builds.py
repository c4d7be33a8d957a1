"""Continuous integration on a 2-host lab, as a product team uses it: a git push signed
with the hook's secret is cloned by the build host (its agent runs with --builds on
a reserved core), built, tagged APP:YYYYMMDD-<sha7>, pushed to the lab's registry and
deployed to the stack, whose members then serve the new build; a badly signed push
starts nothing. The git server is a real `git daemon` on the lab's switch."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from dockyard.lab.procs import wait_for
from tests.gitserver import GitServer, git_server
from tests.lab.conftest import LabRun, running_lab

SECRET = "lab-build-secret-0123456789"
RC_LOCAL = """#!/bin/sh
mkdir -p /www && cat /etc/version > /www/index.html 2>/dev/null || echo none > /www/index.html
httpd -p 8080 -h /www
"""
# from the probe's namespace: what each member serves
FETCH = r"""
import sys, urllib.request
for ip in sys.argv[1:]:
    with urllib.request.urlopen(f"http://{ip}:8080/index.html", timeout=5) as r:
        print(r.read().decode().strip())
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    with running_lab("--hosts", "2", "--build-host", "--host-down-after", "20") as run:
        rc = tmp_path_factory.mktemp("builds") / "rc.local"
        rc.write_text(RC_LOCAL)
        rc.chmod(0o755)
        run.cli("app", "create", "shop")
        run.cli(
            "stack", "create", "shop/web", "--image", "demo", "--flavor", "small",
            "--network", "lab", "--replicas", "2", "--config-file", f"{rc}:/etc/rc.local",
            "--health-http", "8080/index.html", "--progress-deadline", "60", "--wait",
        )  # fmt: skip
        yield run


@pytest.fixture(scope="module")
def git(lab: LabRun) -> Iterator[GitServer]:
    with git_server(lab.record()["switch_ip"]) as server:  # where the build host reaches
        yield server


def _demo_on_build_host(lab: LabRun) -> str:
    """The demo image as the build host's dockerd holds it (pulled by digest for the
    stack's member there): the Dockerfile starts FROM it, nothing is pulled."""
    host = lab.record()["hosts"][-1]
    sock = f"unix://{host['exec_root']}.sock"
    out = subprocess.run(
        ["docker", "-H", sock, "image", "ls", "--digests", "--format",
         "{{.Repository}}@{{.Digest}}"],  # fmt: skip
        capture_output=True, text=True, check=True,
    ).stdout.split()
    found = [ref for ref in out if "demo" in ref and "@sha256:" in ref]
    assert found, out
    return found[0]


def _push(lab: LabRun, commit: str, secret: str) -> httpx.Response:
    body = json.dumps({"ref": "refs/heads/main", "after": commit, "pusher": {"name": "dana"},
                       "repository": {"clone_url": "https://elsewhere.example/x.git"}})  # fmt: skip
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    verify = ssl.create_default_context(cafile=lab.env["DOCKYARD_CA"])
    return httpx.post(
        f"{lab.env['DOCKYARD_URL']}/v1/apps/shop/hooks/git", content=body, verify=verify,
        headers={"content-type": "application/json", "x-github-event": "push",
                 "x-hub-signature-256": f"sha256={mac}"},
    )  # fmt: skip


def _served(lab: LabRun) -> list[str]:
    ips = [m["ip"] for m in lab.cli_json("stack", "show", "shop/web")["instances"]]
    probe = ["nsenter", f"--net=/run/netns/{lab.record()['probe_ns']}", sys.executable, "-c"]
    out = subprocess.run([*probe, FETCH, *ips], capture_output=True, text=True, timeout=60)
    return out.stdout.split()


def _builds(lab: LabRun) -> list[Any]:
    return list(lab.cli_json("build", "list", "shop"))


def test_a_signed_push_is_built_tagged_pushed_and_deployed(lab: LabRun, git: GitServer) -> None:
    assert _served(lab) == ["none", "none"]
    files = {"Dockerfile": f"FROM {_demo_on_build_host(lab)}\nCOPY version /etc/version\n"}
    commit = git.commit("shop", {**files, "version": "built-from-git\n"})
    lab.cli("app", "hook", "shop", "--repo", git.url("shop"), "--branch", "main",
            "--stack", "web", "--auto-deploy", "--secret", SECRET)  # fmt: skip

    bad = _push(lab, commit, "not-the-secret-at-all")
    assert bad.status_code == 401 and _builds(lab) == []  # nothing started
    r = _push(lab, commit, SECRET)
    assert r.status_code == 202, r.text
    (build_id,) = r.json()["builds"]

    def ended() -> bool:
        return str(lab.cli_json("build", "show", build_id)["status"]) in (
            "succeeded", "failed", "cancelled")  # fmt: skip

    wait_for(ended, 300, "the build to end")
    b = lab.cli_json("build", "show", build_id)
    log = lab.cli("build", "logs", build_id).stdout
    assert b["status"] == "succeeded", (b, log)
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert b["commit"] == commit and b["host"] == lab.record()["hosts"][-1]["name"]
    assert b["tag"].endswith(f"/shop:{today}-{commit[:7]}"), b["tag"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", b["digest"])
    assert "COPY version /etc/version" in log
    image = lab.cli_json("image", "show", b["image"])
    assert image["status"] == "active"

    wait_for(lambda: _served(lab) == ["built-from-git"] * 2, 300, "the new build served")

    def deployed() -> bool:
        return str(lab.cli_json("stack", "show", "shop/web")["deploy"]["status"]) != "running"

    wait_for(deployed, 120, "the deploy to end")
    st = lab.cli_json("stack", "show", "shop/web")
    assert st["current_release"] == 2 and st["deploy"]["status"] == "succeeded"
    (rel,) = [x for x in lab.cli_json("release", "list", "shop/web") if x["number"] == 2]
    assert rel["image"] == b["image"]
