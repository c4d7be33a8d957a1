"""Every number and string a client sends has bounds: 422 naming the field, never a 500."""

from __future__ import annotations

import json
import tracemalloc

import pytest

HUGE = 2**63
BAD = "\ud800"


def _raw(cloud, method, path, body, token=None):
    """Send JSON as the client wrote it (lone surrogates escaped as \\ud800)."""
    headers = {
        "authorization": f"Bearer {token or cloud.admin}",
        "content-type": "application/json",
    }
    return cloud.client.request(method, "/v1" + path, content=json.dumps(body), headers=headers)


def _expect_422(r, field):
    assert r.status_code == 422, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in r.json()["errors"]], r.json()


FLAVOR = {"name": "f", "vcpus": 1, "memory_mb": 64}
HOST = {"name": "h1", "cores": 4, "memory_mb": 8192, "disk_gb": 10}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/flavors", {**FLAVOR, "memory_mb": HUGE}, "memory_mb"),
        ("/flavors", {**FLAVOR, "disk_gb": HUGE}, "disk_gb"),
        ("/flavors", {**FLAVOR, "pids_limit": HUGE}, "pids_limit"),
        ("/flavors", {**FLAVOR, "limits": {"swap_mb": HUGE}}, "limits.swap_mb"),
        ("/flavors", {**FLAVOR, "limits": {"disk_read_bps": HUGE}}, "limits.disk_read_bps"),
        ("/flavors", {**FLAVOR, "limits": {"net_egress_kbit": HUGE}}, "limits.net_egress_kbit"),
        ("/flavors", {**FLAVOR, "memory_mb": 2**70}, "memory_mb"),
        ("/flavors", {**FLAVOR, "name": BAD}, "name"),
        ("/projects", {"name": BAD}, "name"),
        ("/images", {"name": "i", "source": "docker", "ref": "x" + BAD}, "ref"),
        ("/images", {"name": "i", "source": "docker", "ref": "x\x00y"}, "ref"),
        ("/images", {"name": "i", "source": "docker", "ref": "x", "command": [BAD]}, "command.0"),
        (
            "/networks",
            {"name": "n", "bridge": "b", "subnet": {"cidr": "198.18.0.0/24", "dns": [BAD]}},
            "subnet.dns.0",
        ),
        ("/instances", {"name": "a", "image": BAD, "flavor": "f", "network": "n"}, "image"),
        ("/instances", {"name": "a", "image": "i", "flavor": "f", "network": "n", "ip": BAD}, "ip"),
    ],
)
def test_out_of_range_numbers_and_bad_text_are_422_naming_the_field(cloud, path, body, field):
    _expect_422(_raw(cloud, "POST", path, body), field)


def test_quota_and_host_figures_are_bounded(cloud):
    _expect_422(_raw(cloud, "PATCH", "/projects/admin/quota", {"vcpus": HUGE}), "vcpus")
    token = cloud.agent_token("h1")
    for field, value in [("memory_mb", HUGE), ("disk_gb", HUGE), ("cores", HUGE)]:
        _expect_422(_raw(cloud, "POST", "/agent/hosts", {**HOST, field: value}, token), field)
    body = {**HOST, "labels": {BAD: "x"}}
    _expect_422(_raw(cloud, "POST", "/agent/hosts", body, token), "labels")
    cloud.ok("POST", "/agent/hosts", token, json=HOST)
    _expect_422(_raw(cloud, "PATCH", "/hosts/h1", {"availability_zone": BAD}), "availability_zone")


def test_agent_reports_and_events_are_bounded(cloud):
    cloud.catalog()
    token = cloud.register("h1")
    iid = cloud.create("web").json()["id"]
    report = {"power_state": "running", "error": BAD}
    _expect_422(_raw(cloud, "PUT", f"/agent/instances/{iid}/state", report, token), "error")
    event = [{"time": "2026-01-01T00:00:00Z", "kind": "oom-kill", "message": "x\x00"}]
    _expect_422(_raw(cloud, "POST", f"/agent/instances/{iid}/events", event, token), "0.message")


def test_path_and_query_parameters_are_bounded(cloud):
    r = cloud.call("GET", "/flavors/%ED%A0%80")  # \ud800 as (invalid) UTF-8
    assert r.status_code in (404, 422), r.text
    r = cloud.call("GET", "/flavors/" + "a" * 1000)
    _expect_422(r, "key")
    token = cloud.register("h1")
    r = cloud.call("GET", f"/agent/hosts/h1/desired?since={HUGE}", token)
    _expect_422(r, "since")
    r = cloud.call("GET", "/agent/hosts/h1/desired?wait=nan", token)
    _expect_422(r, "wait")


def test_an_unknown_field_named_with_a_surrogate_is_422_not_500(cloud):
    r = _raw(cloud, "POST", "/projects", {"name": "p", BAD * 1000: 1})
    assert r.status_code == 422, r.text
    assert len(r.text) < 2000


def test_datetimes_carry_a_timezone(cloud):
    cloud.catalog()
    (image,) = cloud.ok("GET", "/images")
    assert image["created_at"].endswith(("Z", "+00:00")), image["created_at"]


# --- hostname rules: validated, never rendered when unsafe


def _network(cloud, rule):
    body = {
        "name": "n",
        "bridge": "dyt-b",
        "subnet": {"cidr": "198.18.3.0/24", "hostname_rule": rule},
    }
    return cloud.call("POST", "/networks", json=body)


@pytest.mark.parametrize(
    "rule",
    [
        "{o4:999999999}",
        "{o4:99}",
        "{o4:{o3}}",
        "{o4:{o3}{o3}}",
        "web{o4!r}",
        "web{o4:<8}",
        "{name:>999999}",
        "web_{o4}",
        "{o1.real}",
        "{o1[0]}",
        "x" * 100,
    ],
)
def test_unsafe_hostname_rules_are_refused_quickly_without_echo(cloud, rule):
    """Refused from the rule's text, never by formatting it: "{o4:999999999}" formatted
    would build a 1 GB string. Judged by memory (the server runs in this process),
    not by a time bound, which a loaded CI machine once broke for a harmless rule."""
    tracemalloc.start()
    try:
        r = _network(cloud, rule)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status_code == 422, r.text
    assert peak < 20 * 2**20, f"refusing {rule!r} took {peak / 2**20:.0f} MiB"
    assert len(r.text) < 1000


@pytest.mark.parametrize(
    ("rule", "host"),
    [("web{o3}{o4:03d}", "web3010"), ("n{o4:x}", "na"), ("vm-{ip}", "vm-198-18-3-10")],
)
def test_safe_hostname_rules_render(cloud, rule, host):
    assert _network(cloud, rule).status_code == 201
    cloud.ok("POST", "/flavors", json=FLAVOR)
    cloud.ok("POST", "/images", json={"name": "i", "source": "docker", "ref": "x:1"})
    cloud.register("h1")
    r = cloud.create("a", image="i", flavor="f", network="n", ip="198.18.3.10")
    assert r.status_code == 202, r.text
    assert r.json()["hostname"] == host


def test_a_number_with_thousands_of_digits_is_a_4xx(cloud):
    body = '{"name": "f", "vcpus": 1, "memory_mb": ' + "9" * 5000 + "}"
    r = cloud.client.post(
        "/v1/flavors",
        content=body,
        headers={"authorization": f"Bearer {cloud.admin}", "content-type": "application/json"},
    )
    assert r.status_code in (400, 422), r.text
    assert r.headers["content-type"] == "application/problem+json"
