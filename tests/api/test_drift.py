"""Consistency checks through the API and the CLI: agents report baselines and
instances' drift with their heartbeats; admins see the drift, declare the baseline."""

from __future__ import annotations

import json

import pytest

from dockyard.api.app import create_app
from dockyard.api.server import init
from dockyard.cli.main import main
from dockyard.db.session import Database
from tests.api.servers import serving_app
from tests.api.test_roles import _user

PID_MAX = "sysctl.kernel.pid_max"
BASE = {"kernel.release": "6.1.0", "dockerd.live_restore": "true", PID_MAX: "4194304"}


def _beat(cloud, host, token, **status):
    return cloud.ok("POST", f"/agent/hosts/{host}/heartbeat", token, json=status)


def _three_hosts(cloud, odd=None):
    tokens = {h: cloud.register(h) for h in ("h1", "h2", "h3")}
    for h, token in tokens.items():
        _beat(cloud, h, token, baseline={**BASE, **(odd or {})} if h == "h3" else BASE)
    return tokens


def test_the_odd_host_is_listed_with_the_majority_it_differs_from(cloud):
    _three_hosts(cloud, odd={PID_MAX: "32768"})
    checks = {c["host"]: c for c in cloud.ok("GET", "/hosts/check")}
    assert checks["h1"]["drift"] == [] and checks["h2"]["drift"] == []
    assert checks["h3"]["drift"] == [
        {
            "item": PID_MAX,
            "value": "32768",
            "expected": "4194304",
            "source": "majority of 3 hosts (2 agree)",
        }
    ]
    assert cloud.ok("GET", "/hosts/h3/check")["drift"] == checks["h3"]["drift"]
    metrics = cloud.call("GET", "/monitoring/metrics").text  # what the drift alert reads
    assert f'dockyard_host_drift{{az="nova",host="h3",item="{PID_MAX}"}} 1.0' in metrics
    assert 'dockyard_host_drift{az="nova",host="h1"' not in metrics


def test_a_declared_value_makes_every_host_that_differs_drift(cloud):
    _three_hosts(cloud)
    out = cloud.ok("PUT", "/hosts/baseline", json={"values": {PID_MAX: "65536"}})
    assert {"item": PID_MAX, "value": "65536", "source": "declared", "hosts": 3} in out
    checks = cloud.ok("GET", "/hosts/check")
    assert [(c["host"], [d["source"] for d in c["drift"]]) for c in checks] == [
        ("h1", ["declared"]),
        ("h2", ["declared"]),
        ("h3", ["declared"]),
    ]
    cloud.ok("PUT", "/hosts/baseline", json={"remove": [PID_MAX]})
    assert all(c["drift"] == [] for c in cloud.ok("GET", "/hosts/check"))


def test_two_hosts_that_disagree_are_undecided_not_drifted(cloud):
    t1, t2 = cloud.register("h1"), cloud.register("h2")
    _beat(cloud, "h1", t1, baseline={PID_MAX: "1"})
    _beat(cloud, "h2", t2, baseline={PID_MAX: "2"})
    checks = cloud.ok("GET", "/hosts/check")
    assert [(c["drift"], c["undecided"]) for c in checks] == [([], [PID_MAX])] * 2
    [item] = [b for b in cloud.ok("GET", "/hosts/baseline") if b["item"] == PID_MAX]
    assert item["value"] is None and item["source"] == "tie"


def test_an_agent_without_a_body_still_heartbeats_and_keeps_the_last_baseline(cloud):
    tokens = _three_hosts(cloud, odd={PID_MAX: "32768"})
    r = cloud.call("POST", "/agent/hosts/h3/heartbeat", tokens["h3"])
    assert r.status_code == 200 and "generation" in r.json()
    assert cloud.ok("GET", "/hosts/h3/check")["drift"][0]["value"] == "32768"


def test_instance_drift_shows_in_server_show_and_host_check(cloud):
    cloud.catalog()
    token = cloud.register("h1")
    inst = cloud.create("web").json()
    drift = {"item": "memory", "value": "33554432", "expected": "134217728", "source": "spec"}
    body = [{"instance_id": inst["id"], "name": "web", "items": [drift]}]
    _beat(cloud, "h1", token, baseline=BASE, instance_drift=body)
    assert cloud.ok("GET", "/instances/web")["drift"] == [drift]
    assert cloud.ok("GET", "/hosts/h1/check")["instances"] == body
    _beat(cloud, "h1", token, instance_drift=[])  # put back: gone from both
    assert cloud.ok("GET", "/instances/web")["drift"] == []
    assert cloud.ok("GET", "/hosts/h1/check")["instances"] == []


def test_only_admins_see_or_declare_the_baseline(cloud):
    _three_hosts(cloud)
    member = _user(cloud, "mia", "member")
    for method, path, body in [
        ("GET", "/hosts/check", None),
        ("GET", "/hosts/h1/check", None),
        ("GET", "/hosts/baseline", None),
        ("PUT", "/hosts/baseline", {"values": {PID_MAX: "1"}}),
    ]:
        assert cloud.call(method, path, member, json=body).status_code == 403


@pytest.mark.parametrize(
    "body,field",
    [
        ({"values": {"Bad Key": "1"}}, "values"),
        ({"values": {PID_MAX: "x" * 257}}, "values"),
        ({"values": {PID_MAX: "1\n2"}}, "values"),
        ({"values": {PID_MAX: "1"}, "remove": [PID_MAX]}, "either set an item or remove it"),
    ],
)
def test_a_bad_declaration_says_what_to_change(cloud, body, field):
    r = cloud.call("PUT", "/hosts/baseline", json=body)
    assert r.status_code in (400, 422) and field in r.text, r.text


def test_an_agent_cannot_report_for_another_host_nor_flood_it(cloud):
    tokens = _three_hosts(cloud)
    r = cloud.call("POST", "/agent/hosts/h2/heartbeat", tokens["h1"], json={"baseline": BASE})
    assert r.status_code == 403
    flood = {f"item.{i}": "x" for i in range(300)}
    r = cloud.call("POST", "/agent/hosts/h1/heartbeat", tokens["h1"], json={"baseline": flood})
    assert r.status_code == 422


def test_unknown_host_check_is_404(cloud):
    r = cloud.call("GET", "/hosts/nope/check")
    assert r.status_code == 404 and "host list" in r.json()["detail"]


# --- the CLI


@pytest.fixture
def served(tmp_path, monkeypatch):
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    admin = init(db)
    with serving_app(create_app(db, tmp_path)) as url:
        monkeypatch.setenv("DOCKYARD_URL", url.removesuffix("/v1"))
        monkeypatch.setenv("DOCKYARD_TOKEN", admin)
        yield url, admin
    db.engine.dispose()


def _cli_register(url, admin, odd=None):
    import httpx

    auth = {"authorization": f"Bearer {admin}"}
    for h in ("h1", "h2", "h3"):
        tok = httpx.post(f"{url}/agent-tokens", json={"host": h}, headers=auth).json()["token"]
        agent = {"authorization": f"Bearer {tok}"}
        body = {"name": h, "cores": 4, "memory_mb": 8192, "disk_gb": 100}
        httpx.post(f"{url}/agent/hosts", json=body, headers=agent).raise_for_status()
        base = {**BASE, **(odd or {})} if h == "h3" else BASE
        httpx.post(
            f"{url}/agent/hosts/{h}/heartbeat", json={"baseline": base}, headers=agent
        ).raise_for_status()


def test_host_check_exits_3_and_lists_the_drift(served, capsys):
    _cli_register(*served, odd={PID_MAX: "32768"})
    with pytest.raises(SystemExit) as exc:
        main(["host", "check", "--all"])
    assert exc.value.code == 3
    out = capsys.readouterr().out
    assert "h3" in out and PID_MAX in out and "32768" in out and "4194304" in out
    main(["host", "check", "h1"])  # no drift: returns, exit status 0
    assert "no drift on 1 host(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["host", "check", "h3", "-f", "json"])
    assert json.loads(capsys.readouterr().out)[0]["drift"][0]["value"] == "32768"


def test_host_baseline_set_show_unset(served, capsys):
    _cli_register(*served)
    main(["host", "baseline", "set", f"{PID_MAX}=65536"])
    assert "declared" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["host", "check", "--all"])
    assert capsys.readouterr().out.count("65536") == 3
    main(["host", "baseline", "unset", PID_MAX])
    capsys.readouterr()
    main(["host", "baseline", "show", "-f", "json"])
    shown = {b["item"]: b for b in json.loads(capsys.readouterr().out)}
    assert shown[PID_MAX]["source"].startswith("majority of 3 hosts")
    with pytest.raises(SystemExit) as exc:
        main(["host", "check"])
    assert exc.value.code == 1
    assert "give a host NAME or --all" in capsys.readouterr().err


def test_host_check_help_names_its_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["host", "check", "--help"])
    assert "Exit status 3 when anything drifts" in capsys.readouterr().out
