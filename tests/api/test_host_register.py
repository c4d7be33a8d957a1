"""What an agent says about its host: believed within bounds; the admin's AZ wins."""

from __future__ import annotations

import pytest


def test_an_admins_az_survives_the_agents_next_registration(cloud):
    token = cloud.register("h1", availability_zone="az-agent")
    assert cloud.ok("GET", "/hosts")[0]["availability_zone"] == "az-agent"
    cloud.ok("PATCH", "/hosts/h1", json={"availability_zone": "az-admin"})
    body = {"name": "h1", "cores": 4, "memory_mb": 8192, "disk_gb": 100}
    cloud.ok("POST", "/agent/hosts", token, json={**body, "availability_zone": "az-agent"})
    cloud.ok("POST", "/agent/hosts", token, json=body)  # no --availability-zone: "nova"
    assert cloud.ok("GET", "/hosts")[0]["availability_zone"] == "az-admin"
    assert [z["name"] for z in cloud.ok("GET", "/availability-zones")] == ["az-admin"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("cores", 4097),
        ("cores", 10**6),
        ("memory_mb", 64 * 2**20 + 1),
        ("disk_gb", 2**20 + 1),
        ("reserved_memory_mb", 64 * 2**20 + 1),
        ("docker_version", "x" * 65),
    ],
)
def test_absurd_self_declared_capacity_is_422(cloud, field, value):
    token = cloud.agent_token("h1")
    body = {"name": "h1", "cores": 4, "memory_mb": 8192, "disk_gb": 100, field: value}
    r = cloud.call("POST", "/agent/hosts", token, json=body)
    assert r.status_code == 422 and field in r.json()["detail"], r.text
    assert cloud.ok("GET", "/hosts") == []


def test_the_biggest_plausible_host_registers(cloud):
    cloud.register("big", cores=4096, memory_mb=64 * 2**20, disk_gb=2**20)
    assert cloud.ok("GET", "/hosts")[0]["cores"] == 4096
