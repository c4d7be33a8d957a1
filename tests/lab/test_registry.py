"""The lab's registries: each host pulls the image by digest through its AZ's cache,
over TLS verified against the lab's CA (/etc/docker/certs.d), with the hosts' login."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from dockyard.images import logins
from dockyard.images.registry import Registry
from tests.lab.conftest import LabRun
from tests.lab.test_lab import create, docker_on, running


def test_each_host_pulls_by_digest_from_its_az_cache(lab: LabRun) -> None:
    regs = lab.record()["registries"]
    demo = lab.cli_json("image", "show", "demo")
    assert demo["digest"].startswith("sha256:") and demo["registry_url"] == regs["primary"]["url"]
    listed = {r["availability_zone"]: r for r in lab.cli_json("registry", "list")}
    assert listed[None]["primary"] and listed["az1"]["url"] == regs["caches"]["az1"]["url"]
    repo = demo["ref"].rpartition(":")[0]
    for host, az in (("lab1", "az1"), ("lab2", "az2")):
        inst = create(lab, f"pulled-{az}", az)
        assert inst["host"] == host
        cache = regs["caches"][az]["url"].split("://", 1)[1]
        out = docker_on(lab, host, "image", "inspect", demo["ref"]).stdout
        assert f"{cache}/{repo}@{demo['digest']}" in json.loads(out)[0]["RepoDigests"]
        with _client(lab, regs["caches"][az]["url"]) as reg:
            assert repo in reg.repositories()  # the cache holds what its AZ pulled
    held = lab.cli_json("registry", "images", "--az", "az1")
    assert [i["digest"] for i in held["images"]] == [demo["digest"]]


def _client(lab: LabRun, url: str, login: str = "hosts") -> Registry:
    found = getattr(logins.read(Path(lab.record()["registries"]["logins"])), login)
    return Registry(
        url, auth=(found.username, found.password), verify=str(lab.state / "tls/ca.pem")
    )


def test_the_registries_speak_tls_from_the_labs_ca_and_refuse_anonymous_requests(
    lab: LabRun,
) -> None:
    regs = lab.record()["registries"]
    ca = str(lab.state / "tls" / "ca.pem")
    urls = [regs["primary"]["url"], *(c["url"] for c in regs["caches"].values())]
    demo = lab.cli_json("image", "show", "demo")
    repo = demo["ref"].rpartition(":")[0]
    for url in urls:
        assert url.startswith("https://")
        assert httpx.get(f"{url}/v2/_catalog", verify=ca).status_code == 401
        put = httpx.post(f"{url}/v2/{repo}/blobs/uploads/", verify=ca)
        assert put.status_code == 401  # no anonymous push either
        addr = url.split("://", 1)[1]
        assert Path(f"/etc/docker/certs.d/{addr}/ca.crt").read_bytes() == Path(ca).read_bytes()
    # a dockerd without the hosts' login is refused before the registry says what it
    # has (a digest the host holds would not be asked for: dockerd has it)
    cache = regs["caches"]["az1"]["url"].split("://", 1)[1]
    anonymous = docker_on(lab, "lab1", "pull", f"{cache}/{repo}@sha256:{'0' * 64}")
    assert anonymous.returncode != 0 and "no basic auth" in anonymous.stderr.lower(), anonymous
    dockerds = [h["dockerd_pid"] for h in lab.record()["hosts"]]
    for pid in dockerds:
        assert "--insecure-registry" not in open(f"/proc/{pid}/cmdline").read()


def test_down_stops_the_registries(lab: LabRun) -> None:
    regs = lab.record()["registries"]
    roots = [regs["primary"]["root"], *(c["root"] for c in regs["caches"].values())]
    pids = [int(open(f"{root}/registry.pid").read()) for root in roots]
    lab.lab("down")
    assert not [pid for pid in pids if running(pid)]
    assert not [d for d in regs["certs_d"] if Path(d).exists()]  # only what the lab made
    assert not Path(regs["logins"]).exists()
