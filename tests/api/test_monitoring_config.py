"""GET /v1/monitoring/config/{kind}: the files for a user's own Prometheus and
Alertmanager; sync(): the same files beside a managed Prometheus and Alertmanager."""

from __future__ import annotations

import json

import yaml

from dockyard.api import monitoring_config
from dockyard.api.monitoring import keep_token
from dockyard.api.server import init
from dockyard.db.session import Database
from dockyard.monitor.setup import Setup


def test_admin_gets_the_rules_the_alerts_come_from(cloud):
    r = cloud.call("GET", "/monitoring/config/rules")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/yaml")
    groups = {g["name"]: g for g in yaml.safe_load(r.text)["groups"]}
    assert {"dockyard-hosts", "dockyard-instances", "dockyard-drift"} <= set(groups)
    names = {rule["alert"] for rule in groups["dockyard-hosts"]["rules"]}
    assert {"DockyardHostDown", "DockyardAgentDown", "DockyardHostTasksNearPidMax"} <= names


def test_prometheus_config_points_at_this_server_with_the_users_paths(cloud):
    r = cloud.call(
        "GET", "/monitoring/config/prometheus",
        params={"token_file": "/etc/prom/dy.token", "ca_file": "/etc/prom/ca.pem",
                "alertmanager": "am.example:9093"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    doc = yaml.safe_load(r.text)
    sd = doc["scrape_configs"][0]["http_sd_configs"][0]
    assert sd["url"] == "http://testserver/v1/monitoring/targets"
    assert sd["authorization"]["credentials_file"] == "/etc/prom/dy.token"
    assert sd["tls_config"]["ca_file"] == "/etc/prom/ca.pem"
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "am.example:9093"
    ]


def test_alertmanager_config_has_the_host_down_inhibition(cloud):
    doc = yaml.safe_load(cloud.call("GET", "/monitoring/config/alertmanager").text)
    assert doc["route"]["receiver"] == "null"
    assert {"source_matchers": ['outage="host"'], "target_matchers": ['scope="instance"'],
            "equal": ["host"]} in doc["inhibit_rules"]  # fmt: skip


def test_bad_requests_say_what_to_change(cloud):
    r = cloud.call("GET", "/monitoring/config/grafana")
    assert r.status_code == 422 and "prometheus" in r.text
    r = cloud.call("GET", "/monitoring/config/prometheus", params={"token_file": "dy.token"})
    assert r.status_code == 422 and "token_file" in r.text
    r = cloud.call("GET", "/monitoring/config/prometheus", params={"alertmanager": "am"})
    assert r.status_code == 422 and "alertmanager" in r.text


def test_only_admins_read_it(cloud):
    """The Alertmanager file will hold receivers' secrets (SMTP passwords, webhook URLs)."""
    cloud.ok("POST", "/projects", json={"name": "p1"})
    token = cloud.ok("POST", "/users", json={"name": "mia", "project": "p1", "role": "member"})
    r = cloud.call("GET", "/monitoring/config/alertmanager", token=token["token"])
    assert r.status_code == 403
    assert cloud.client.get("/v1/monitoring/config/rules").status_code == 401


def test_sync_writes_changed_files_only(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    init(db)
    setup_file = tmp_path / "mon" / "setup.json"
    setup_file.parent.mkdir()
    base = {"server_url": "http://127.0.0.1:8787", "prometheus_url": "http://127.0.0.1:1",
            "alertmanager_url": "http://127.0.0.1:2"}  # fmt: skip
    setup_file.write_text(json.dumps(base))
    setup = Setup.read(setup_file)
    assert sorted(monitoring_config.sync(setup, db)) == ["alertmanager", "prometheus", "rules"]
    assert monitoring_config.sync(setup, db) == []  # nothing changed: nothing reloaded
    tuned = {**base, "tuning": {"DockyardHostTasksNearPidMax": {"threshold": 0.0001}}}
    setup_file.write_text(json.dumps(tuned))
    assert monitoring_config.sync(Setup.read(setup_file), db) == ["rules"]
    assert "> 0.0001" in (tmp_path / "mon" / "rules" / "dockyard.yml").read_text()
    prom = yaml.safe_load((tmp_path / "mon" / "prometheus.yml").read_text())
    assert prom["rule_files"] == [str(tmp_path / "mon" / "rules" / "dockyard.yml")]
    db.engine.dispose()


def test_cli_prints_the_files_a_users_prometheus_reads(tmp_path, monkeypatch, capsys):
    """`dockyard monitoring config --rules` output is a rule file promtool accepts, and
    --prometheus carries the user's paths."""
    import shutil
    import subprocess

    import pytest

    from dockyard.api.app import create_app
    from dockyard.cli.main import main
    from tests.api.servers import serving_app

    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    admin = init(db)
    with serving_app(create_app(db, tmp_path)) as url:
        monkeypatch.setenv("DOCKYARD_URL", url.removesuffix("/v1"))
        monkeypatch.setenv("DOCKYARD_TOKEN", admin)
        main(["monitoring", "config", "--rules"])
        (tmp_path / "rules.yml").write_text(capsys.readouterr().out)
        main(["monitoring", "config", "--prometheus", "--token-file", "/srv/p/dy.token",
              "--alertmanager-address", "127.0.0.1:9093"])  # fmt: skip
        prom = yaml.safe_load(capsys.readouterr().out)
        with pytest.raises(SystemExit):
            main(["monitoring", "config"])  # one of the three is required
    db.engine.dispose()
    sd = prom["scrape_configs"][0]["http_sd_configs"][0]
    assert sd["url"] == url + "/monitoring/targets"
    assert sd["authorization"]["credentials_file"] == "/srv/p/dy.token"
    if shutil.which("promtool"):
        out = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yml")],
                             capture_output=True, text=True)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr


def test_changed_rules_and_grouping_reach_running_daemons(tmp_path):
    """sync() after a change: Prometheus evaluates the new threshold and Alertmanager
    groups with the new wait, without a restart (POST /-/reload)."""
    import shutil

    import httpx
    import pytest

    from dockyard.lab import monitoring as lab_monitoring
    from dockyard.lab.procs import free_ports, stop_proc, wait_for

    if not shutil.which("prometheus") or not shutil.which("prometheus-alertmanager"):
        pytest.skip("needs prometheus and prometheus-alertmanager")
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    init(db)
    ports = free_ports(2)
    mon = lab_monitoring.Monitoring(tmp_path / "mon", ports, ports + 1)
    lab_monitoring.write_setup(mon, "http://127.0.0.1:9", None, {})
    keep_token([Setup.read(mon.setup_file).token_file], "t")  # what the server does at start
    monitoring_config.sync(Setup.read(mon.setup_file), db)
    procs = lab_monitoring.start(mon)
    try:
        tuned = {"grouping": {"group_wait": "7s"},
                 "rules": {"DockyardHostTasksNearPidMax": {"threshold": 0.0001, "for": "9s"}}}
        lab_monitoring.write_setup(mon, "http://127.0.0.1:9", None, tuned)  # fmt: skip
        assert sorted(monitoring_config.sync(Setup.read(mon.setup_file), db)) == [
            "alertmanager", "rules"
        ]

        def pid_rule() -> dict | None:
            groups = httpx.get(f"{mon.prometheus_url}/api/v1/rules").json()["data"]["groups"]
            rule = next(r for g in groups for r in g["rules"]
                        if r["name"] == "DockyardHostTasksNearPidMax")  # fmt: skip
            return rule if rule["duration"] == 9 else None

        assert "> 0.0001" in wait_for(pid_rule, 10, "Prometheus to load the new rules")["query"]
        status = httpx.get(f"{mon.alertmanager_url}/api/v2/status").json()
        assert "group_wait: 7s" in status["config"]["original"]
    finally:
        for proc in procs.values():
            stop_proc(proc)
        db.engine.dispose()


def test_receivers_and_routes_from_the_database_join_the_inhibition(cloud, tmp_path):
    """A receiver and a route added with `dockyard alert` appear in alertmanager.yml
    beside the inhibition rules, and amtool accepts the whole."""
    import shutil
    import subprocess

    cloud.ok("POST", "/alerts/receivers",
             json={"name": "ops", "kind": "webhook", "url": "http://198.18.0.9/hook"})
    cloud.ok("POST", "/alerts/routes", json={"receiver": "ops", "project": "p1", "position": 0})
    text = cloud.call("GET", "/monitoring/config/alertmanager").text  # fmt: skip
    doc = yaml.safe_load(text)
    assert "ops" in {r["name"] for r in doc["receivers"]}
    assert doc["route"]["routes"][0]["receiver"] == "ops"
    assert len(doc["inhibit_rules"]) == 2
    if shutil.which("amtool"):
        (tmp_path / "am.yml").write_text(text)
        out = subprocess.run(["amtool", "check-config", str(tmp_path / "am.yml")],
                             capture_output=True, text=True)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
