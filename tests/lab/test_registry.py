"""The lab's registries: each host pulls the image by digest through its AZ's cache."""

from __future__ import annotations

import json

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
        with Registry(regs["caches"][az]["url"]) as reg:
            assert repo in reg.repositories()  # the cache holds what its AZ pulled
    held = lab.cli_json("registry", "images", "--az", "az1")
    assert [i["digest"] for i in held["images"]] == [demo["digest"]]


def test_down_stops_the_registries(lab: LabRun) -> None:
    regs = lab.record()["registries"]
    roots = [regs["primary"]["root"], *(c["root"] for c in regs["caches"].values())]
    pids = [int(open(f"{root}/registry.pid").read()) for root in roots]
    lab.lab("down")
    assert not [pid for pid in pids if running(pid)]
