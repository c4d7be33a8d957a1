"""The pure parts of host lifecycle: refusal reasons per host, the CLI's state words."""

from __future__ import annotations

from dockyard.cli.lifecycle import host_state, power
from dockyard.scheduler.select import select
from dockyard.scheduler.state import HostState, Request


def host(name, **kw):
    base = dict(
        up=True, enabled=True, availability_zone="nova", cores=4, memory_mb=8192, disk_gb=100
    )
    return HostState(name=name, **{**base, **kw})


def test_a_refusal_names_disabled_and_down_hosts_with_the_admins_reason():
    hosts = [
        host("h1", enabled=False, disabled_reason="maintenance: disk swap"),
        host("h2", up=False),
        host("h3", enabled=False),
    ]
    req = Request(vcpus=1, memory_mb=128)
    p = select(hosts, req)
    assert p.host is None and p.rejected == {"ComputeFilter": 3}
    assert p.named["ComputeFilter"] == [
        "disabled: h1 (maintenance: disk swap)",
        "down: h2 (no recent heartbeat)",
        "disabled: h3",
    ]
    assert "ComputeFilter rejected 3 of 3 (disabled: h1 (maintenance: disk swap); " in (
        p.explain(req)
    )


def test_a_disabled_host_is_passed_over_for_an_enabled_one_with_less_room():
    hosts = [host("big", enabled=False, disabled_reason="x"), host("small", memory_mb=512)]
    p = select(hosts, Request(vcpus=1, memory_mb=128))
    assert p.host is not None and p.host.name == "small"
    assert p.rejected == {"ComputeFilter": 1}


def test_filters_without_per_host_reasons_keep_their_hints():
    p = select([host("a", memory_mb_used=8192)], Request(vcpus=1, memory_mb=128))
    assert p.named == {} and "RamFilter rejected 1 of 1" in p.explain(Request(1, 128))


def test_the_cli_words_for_a_host_and_for_power():
    h = {"name": "h1", "state": "down", "enabled": False, "disabled_reason": "disk swap"}
    assert host_state(h) == "down, disabled (disk swap)"
    assert host_state({**h, "disabled_reason": None}) == "down, disabled (no reason given)"
    assert host_state({**h, "enabled": True}) == "down"
    assert power({"power_state": "unknown"}) == "unknown (host down)"
    assert power({"power_state": "running"}) == "running"
