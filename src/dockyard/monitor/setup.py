"""The Prometheus and Alertmanager that `dockyard up --monitoring` and `dockyard lab
up --monitoring` run beside the server: what the starter tells the server (a JSON
file, ``dockyard-server --monitoring-setup DIR/setup.json``) so the server can render
their configuration into DIR and reload them when rules or receivers change.

    DIR/setup.json        written by the starter (lab/monitoring.py)
    DIR/prometheus.yml    written by the server (api/monitoring_config.py: sync)
    DIR/rules/dockyard.yml
    DIR/alertmanager.yml
    the metrics CA        metrics-ca.pem beside setup.json's ca_file (the cloud's CA), made
                          by the server at start: the agents' job's tls ca_file
    DIR/scrape.token      the scrape credential (config.SCRAPE_CREDENTIAL), 0600: the
                          cloud's monitoring token, written by the server at start
                          and when an admin makes a new one
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard import pki
from dockyard.monitor import config, rules

FILES = {"prometheus": "prometheus.yml", "rules": "rules/dockyard.yml",
         "alertmanager": "alertmanager.yml"}  # fmt: skip


@dataclass(frozen=True)
class Setup:
    dir: Path
    scrape: config.Scrape
    prometheus_url: str  # http://HOST:PORT, for /-/reload
    alertmanager_url: str
    tuning: rules.Tuning
    grouping: config.Grouping

    def path(self, kind: str) -> Path:
        return self.dir / FILES[kind]

    @property
    def token_file(self) -> Path:
        return Path(self.scrape.token_file)

    @classmethod
    def read(cls, path: Path) -> Setup:
        """From the JSON file at ``path``; ValueError says what is wrong in it."""
        import json

        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: a JSON object is expected")
        return cls.from_json(path.parent, data)

    @classmethod
    def from_json(cls, dir_: Path, data: Mapping[str, Any]) -> Setup:
        try:
            scrape = config.Scrape(
                server_url=str(data["server_url"]),
                token_file=str(dir_ / "scrape.token"),
                rules_file=str(dir_ / FILES["rules"]),
                alertmanager=str(data["alertmanager_url"]).split("://", 1)[-1],
                ca_file=data.get("ca_file"),
                interval=_duration("interval", data.get("interval", "15s")),
                metrics_ca_file=data.get("metrics_ca_file") or _metrics_ca(data.get("ca_file")),
            )
            grouping = config.Grouping(
                **{k: _duration(k, v) for k, v in data.get("grouping", {}).items()}
            )
            return cls(dir_, scrape, str(data["prometheus_url"]),
                       str(data["alertmanager_url"]),
                       rules.Tuning.from_json(data.get("tuning", {})), grouping)  # fmt: skip
        except KeyError as exc:
            raise ValueError(f"setup: {exc.args[0]} is missing") from exc
        except TypeError as exc:
            raise ValueError(f"setup: {exc}") from exc


def _metrics_ca(ca_file: Any) -> str | None:
    """The metrics CA the server keeps beside the cloud's CA (pki.ensure_metrics_ca);
    None (the agents verified with ``ca_file``) when there is none."""
    if not isinstance(ca_file, str) or not ca_file:
        return None
    path = Path(ca_file).with_name(pki.METRICS_CA + ".pem")
    return str(path) if path.exists() else None


def _duration(name: str, value: Any) -> str:
    if not isinstance(value, str) or not rules.DURATION.match(value):
        raise ValueError(f"setup: {name} must be a Prometheus duration like 15s, not {value!r}")
    return value
