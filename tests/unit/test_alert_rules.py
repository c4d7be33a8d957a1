"""Dockyard's alert rules, checked and unit-tested by Prometheus's own promtool on
synthetic series (tests/unit/alert_rules/<group>.yml, firing and quiet cases)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dockyard.monitor import rules, yamltext

CASES = Path(__file__).parent / "alert_rules"
pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool")


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True)


def _without_annotations(doc: dict[str, Any]) -> dict[str, Any]:
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    return doc


def test_rule_file_passes_promtool_check(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(yamltext.dump(rules.render()))
    out = _promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules.all_rules())} rules found" in out.stdout


def test_every_rule_has_what_an_on_call_needs() -> None:
    for group in rules.render()["groups"]:
        for rule in group["rules"]:
            assert rule["for"] and rule["labels"]["severity"] in ("critical", "warning")
            assert rule["labels"]["scope"] in ("host", "instance", "cloud")
            assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 60


@pytest.mark.parametrize("group", sorted(rules.GROUPS))
def test_group_fires_and_stays_quiet(tmp_path: Path, group: str) -> None:
    assert (CASES / f"{group}.yml").exists(), f"every group has a test file: {group}.yml"
    (tmp_path / "rules.yml").write_text(yamltext.dump(_without_annotations(rules.render())))
    shutil.copy(CASES / f"{group}.yml", tmp_path)
    out = _promtool("test", "rules", f"{group}.yml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_rule_is_tested_firing() -> None:
    tested = "".join(p.read_text() for p in CASES.glob("*.yml"))
    missing = [r.alert for r in rules.all_rules() if f"alertname: {r.alert}" not in tested]
    assert not missing


def test_annotations_expand_with_the_series_labels(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(yamltext.dump(rules.render()))
    (tmp_path / "t.yml").write_text(
        yamltext.dump(
            {
                "rule_files": ["rules.yml"],
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [
                            {"series": 'dockyard_dockerd_up{host="h7",az="az2"}', "values": "0x5"}
                        ],
                        "alert_rule_test": [
                            {
                                "eval_time": "3m",
                                "alertname": "DockyardDockerdDown",
                                "exp_alerts": [_expected("DockyardDockerdDown", "h7")],
                            }
                        ],
                    }
                ],
            }
        )
    )
    out = _promtool("test", "rules", "t.yml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def _expected(alert: str, host: str) -> dict[str, Any]:
    rule = next(r for r in rules.all_rules() if r.alert == alert)
    return {
        "exp_labels": {"severity": rule.severity, "scope": rule.scope, "host": host, "az": "az2"},
        "exp_annotations": {
            "summary": rule.summary.replace("{{ $labels.host }}", host),
            "description": rule.description.replace("{{ $labels.host }}", host),
        },
    }


def test_tuning_lowers_a_threshold_and_shortens_for(tmp_path: Path) -> None:
    """What the end-to-end tests do: tasks near pid_max at 0.005 % of it (pid_max is
    the whole machine's, not to be changed), within 10 s."""
    tuning = rules.Tuning.from_json(
        {"DockyardHostTasksNearPidMax": {"threshold": 0.00005, "for": "10s"}}
    )
    (tmp_path / "rules.yml").write_text(
        yamltext.dump(_without_annotations(rules.render(tuning)))
    )
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "5s",
        "tests": [
            {
                "interval": "5s",
                "input_series": [
                    {"series": 'dockyard_host_tasks{host="h1",az="az1"}', "values": "400x10"},
                    {"series": 'dockyard_host_pid_max{host="h1",az="az1"}', "values": "4194304x10"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "15s",
                        "alertname": "DockyardHostTasksNearPidMax",
                        "exp_alerts": [
                            {"exp_labels": {"severity": "critical", "scope": "host",
                                            "host": "h1", "az": "az1"}}
                        ],
                    }
                ],
            }
        ],
    }  # fmt: skip
    (tmp_path / "t.yml").write_text(yamltext.dump(test))
    out = _promtool("test", "rules", "t.yml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    other = next(r for g in rules.render(tuning)["groups"] for r in g["rules"]
                 if r["alert"] == "DockyardConntrackNearFull")  # fmt: skip
    assert other["for"] == "5m" and other["expr"].endswith("> 0.9")


def test_star_tuning_applies_to_every_alert_without_its_own() -> None:
    tuning = rules.Tuning.from_json({"*": {"for": "5s"}, "DockyardHostDown": {"for": "1s"}})
    fors = {r["alert"]: r["for"] for g in rules.render(tuning)["groups"] for r in g["rules"]}
    assert fors["DockyardHostDown"] == "1s" and fors["DockyardInstanceOOMKill"] == "5s"


# alerts on an agent's gauges: their series vanish while the agent is down
GAUGE_ALERTS = {
    "DockyardDockerdDown", "DockyardHostTasksNearPidMax", "DockyardConntrackNearFull",
    "DockyardInstanceNotRunning", "DockyardProcessDown", "DockyardInstancePidsNearLimit",
    "DockyardInstanceMemoryNearLimit", "DockyardInstanceLoadAboveCores", "DockyardInstanceDrift",
}  # fmt: skip


def test_alerts_on_an_agents_gauges_keep_firing_through_its_outage() -> None:
    """keep_firing_for on the gauge alerts only (increase()/rate() ones keep their range's
    samples), past DockyardAgentDown's for-duration so that alert inhibits them in time;
    tunable like for."""
    rendered = {r["alert"]: r for g in rules.render()["groups"] for r in g["rules"]}
    kept = {name for name, r in rendered.items() if "keep_firing_for" in r}
    assert kept == GAUGE_ALERTS
    assert all(rendered[name]["keep_firing_for"] == "5m" for name in kept)
    assert rendered["DockyardAgentDown"]["for"] == "2m"  # < 5m
    tuning = rules.Tuning.from_json(
        {"*": {"keep_firing_for": "30s"}, "DockyardProcessDown": {"keep_firing_for": "1m"}}
    )
    tuned = {r["alert"]: r for g in rules.render(tuning)["groups"] for r in g["rules"]}
    assert tuned["DockyardProcessDown"]["keep_firing_for"] == "1m"
    assert tuned["DockyardInstanceDrift"]["keep_firing_for"] == "30s"
    assert "keep_firing_for" not in tuned["DockyardInstanceOOMKill"]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"DockyardNoSuch": {"for": "1m"}}, "no alert 'DockyardNoSuch'"),
        ({"DockyardHostDown": {"for": "soon"}}, "Prometheus duration like 30s"),
        ({"DockyardHostDown": {"threshold": -1}}, "threshold must be a number >= 0"),
        ({"DockyardHostDown": {"severity": "low"}}, "'threshold', 'for' and/or 'keep_firing_for'"),
        ({"*": {"keep_firing_for": "a while"}}, "'keep_firing_for' must be a Prometheus dur"),
    ],
)
def test_bad_tuning_says_what_to_change(data: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        rules.Tuning.from_json(data)
