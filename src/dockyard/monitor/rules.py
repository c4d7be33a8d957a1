"""Dockyard's alert rules, rendered as a Prometheus rule file.

Each rule has a threshold (where it has one; written ``$THRESHOLD`` in its
expression), a for-duration, a severity, a scope and the words an on-call
reads: a summary and a description that says what to do. :class:`Tuning`
overrides thresholds and for-durations per alert (or for all with ``*``):
the tests shorten them, an operator may raise them.

Labels every alert carries, for Alertmanager's routes and inhibition:

- ``severity``: critical (page) or warning (a ticket);
- ``scope``: host, instance or cloud; instance alerts also carry the series'
  ``instance_id, name, project, host, az``, host alerts ``host, az``;
- ``outage="host"`` on the alerts that mean a whole host is gone or blind
  (host down, agent down): they inhibit the ``scope="instance"`` alerts of the
  same ``host`` (alertmanager.py renders that inhibit rule).

Alerts on an agent's gauges (``keeps``) carry ``keep_firing_for`` (KEEP_FIRING,
Prometheus >= 2.42): while the agent is down its series are stale, the expression
returns nothing, and without it they would resolve at once and fire again (after
their for-duration) when it is back. Kept firing, with the labels they had, they stay
inhibited by the host's outage alert instead. The price: a condition that ends
(the series drops below the threshold, or goes away) resolves KEEP_FIRING later.
Alerts on ``increase()``/``rate()`` keep firing through an outage without it (the
range still holds the samples from before).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
# how long an alert on an agent's gauge keeps firing once its series are gone: past
# DockyardAgentDown's 2m, so an agent outage shows as that alert (inhibiting the
# instance alerts) rather than as resolved-then-firing-again alerts
KEEP_FIRING = "5m"


@dataclass(frozen=True)
class Rule:
    alert: str
    expr: str
    for_: str
    severity: str
    scope: str
    summary: str
    description: str
    threshold: float | None = None
    outage: bool = False
    keeps: bool = False  # on an agent's gauge: keep_firing_for KEEP_FIRING


@dataclass(frozen=True)
class Override:
    threshold: float | None = None
    for_: str | None = None
    keep_firing_for: str | None = None


@dataclass(frozen=True)
class Tuning:
    """Overrides by alert name; ``*`` applies to every alert without its own."""

    rules: Mapping[str, Override] = field(default_factory=dict)

    def of(self, alert: str) -> Override:
        own, every = self.rules.get(alert, Override()), self.rules.get("*", Override())
        return Override(
            own.threshold if own.threshold is not None else every.threshold,
            own.for_ or every.for_,
            own.keep_firing_for or every.keep_firing_for,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tuning:
        """From ``{"ALERT"|"*": {"threshold": 0.5, "for": "1m", "keep_firing_for": "5m"}}``
        (keep_firing_for: on the alerts that have it); ValueError says what to change."""
        known = {r.alert for r in all_rules()}
        out = {}
        for name, raw in data.items():
            if name != "*" and name not in known:
                raise ValueError(f"no alert {name!r}; Dockyard's are {', '.join(sorted(known))}")
            if not isinstance(raw, Mapping) or set(raw) - {"threshold", "for", "keep_firing_for"}:
                raise ValueError(
                    f"{name}: give an object with 'threshold', 'for' and/or 'keep_firing_for'"
                )
            out[name] = Override(
                _threshold(name, raw.get("threshold")),
                _for(name, raw.get("for")),
                _for(name, raw.get("keep_firing_for"), "keep_firing_for"),
            )
        return cls(out)


def _threshold(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name}: threshold must be a number >= 0, not {value!r}")
    return float(value)


def _for(name: str, value: Any, key: str = "for") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not DURATION.match(value):
        raise ValueError(f"{name}: '{key}' must be a Prometheus duration like 30s, 5m or 1h")
    return value


HOST_RULES = (
    Rule(
        "DockyardServerDown",
        'up{job="dockyard-server"} == 0',
        "2m",
        "critical",
        "cloud",
        "The Dockyard server at {{ $labels.instance }} does not answer scrapes",
        "Prometheus cannot scrape the server: host-down and drift alerts are blind and no "
        "API call works. Check the dockyard-server process and its log (server.log in the "
        "state dir), its certificate and the scrape credential.",
    ),
    Rule(
        "DockyardHostDown",
        "dockyard_host_up == 0 unless on(host) dockyard_host_enabled == 0",
        "1m",
        "critical",
        "host",
        "Host {{ $labels.host }} ({{ $labels.az }}) is down",
        "The server has had no heartbeat from {{ $labels.host }}: no instance is placed "
        "there and its instances' power state is unknown (their own alerts are inhibited). "
        "Check the machine and its agent; if it will not return soon, evacuate it "
        "(`dockyard host evacuate {{ $labels.host }}`).",
        outage=True,
    ),
    Rule(
        "DockyardAgentDown",
        'up{job="dockyard-agent"} == 0',
        "2m",
        "critical",
        "host",
        "The agent on {{ $labels.host }} does not answer scrapes",
        "Prometheus cannot scrape {{ $labels.instance }}: the host's instances are not "
        "measured and not reconciled. Check dockyard-agent on {{ $labels.host }} (its log, "
        "`systemctl status dockyard-agent`), its certificate and the scrape credential.",
        outage=True,
    ),
    Rule(
        "DockyardDockerdDown",
        "dockyard_dockerd_up == 0",
        "1m",
        "critical",
        "host",
        "dockerd on {{ $labels.host }} does not answer",
        "The agent on {{ $labels.host }} cannot reach dockerd: no instance there can be "
        "started, stopped or created (running ones keep running with live-restore). "
        "Restart docker on the host and read its journal.",
        keeps=True,
    ),
    Rule(
        "DockyardHostTasksNearPidMax",
        "dockyard_host_tasks / (dockyard_host_pid_max > 0) > $THRESHOLD",
        "5m",
        "critical",
        "host",
        "{{ $labels.host }}: tasks at {{ $value | humanizePercentage }} of kernel.pid_max",
        "When tasks reach kernel.pid_max nothing on the host can fork, dockerd and the "
        "agent included. Find the instance with the most pids "
        '(topk(5, dockyard_instance_pids{host="{{ $labels.host }}"})), lower its pids '
        "limit or stop it; raise kernel.pid_max only with care.",
        threshold=0.8,
        keeps=True,
    ),
    Rule(
        "DockyardConntrackNearFull",
        "dockyard_host_conntrack_entries / (dockyard_host_conntrack_max > 0) > $THRESHOLD",
        "5m",
        "warning",
        "host",
        "{{ $labels.host }}: conntrack table at {{ $value | humanizePercentage }}",
        "A full nf_conntrack table drops new connections on the host. Find who opens them "
        "(`conntrack -L` on the host), or raise net.netfilter.nf_conntrack_max.",
        threshold=0.9,
        keeps=True,
    ),
    Rule(
        "DockyardKernelErrors",
        "increase(dockyard_host_kernel_events_total[15m]) > $THRESHOLD",
        "1m",
        "warning",
        "host",
        "{{ $labels.host }}: kernel log reports {{ $labels.class }}",
        "The kernel log of {{ $labels.host }} has {{ $value }} new {{ $labels.class }} "
        "events in 15 minutes. Read `dmesg -T` on the host; hung tasks and I/O errors "
        "point at a failing disk, soft lockups at an overloaded or broken machine: drain "
        "the host (disable it, migrate its instances) if they repeat.",
        threshold=0,
    ),
)

INSTANCE_RULES = (
    Rule(
        "DockyardInstanceNotRunning",
        "(dockyard_instance_should_run == 1) and on(instance_id) (dockyard_instance_running == 0)",
        "3m",
        "critical",
        "instance",
        "Instance {{ $labels.name }} ({{ $labels.project }}) is not running",
        "{{ $labels.name }} on {{ $labels.host }} should run but its container does not. "
        "Read its action log (`dockyard server show {{ $labels.name }}`) and the agent's "
        "log on the host; start it again with `dockyard server start {{ $labels.name }}`.",
        keeps=True,
    ),
    Rule(
        "DockyardProcessDown",
        "dockyard_instance_process_up == 0",
        "2m",
        "critical",
        "instance",
        "{{ $labels.name }}: key process {{ $labels.process }} is down",
        "supervisord in {{ $labels.name }} ({{ $labels.project }}) does not have "
        "{{ $labels.process }} RUNNING. Look at the process's log inside the instance and "
        "`supervisorctl status`; restart it with `supervisorctl start {{ $labels.process }}`.",
        keeps=True,
    ),
    Rule(
        "DockyardProcessFlapping",
        "increase(dockyard_instance_process_restarts_total[15m]) > $THRESHOLD",
        "1m",
        "warning",
        "instance",
        "{{ $labels.name }}: {{ $labels.process }} restarted {{ $value }} times in 15 min",
        "{{ $labels.process }} in {{ $labels.name }} keeps dying and being restarted by "
        "supervisord. Read its log inside the instance; look for OOM kills and pids at "
        "the limit in the same instance.",
        threshold=3,
    ),
    Rule(
        "DockyardInstanceOOMKill",
        "increase(dockyard_instance_oom_kills_total[10m]) > $THRESHOLD",
        "1m",
        "warning",
        "instance",
        "{{ $labels.name }}: the kernel OOM-killed a process",
        "A process in {{ $labels.name }} ({{ $labels.project }}) was killed for lack of "
        "memory at the instance's limit. Find which in the instance's logs; resize it to a "
        "larger flavor (`dockyard server resize`) or fix the application's memory use.",
        threshold=0,
    ),
    Rule(
        "DockyardInstancePidsNearLimit",
        "dockyard_instance_pids / (dockyard_instance_pids_limit > 0) > $THRESHOLD",
        "5m",
        "warning",
        "instance",
        "{{ $labels.name }}: pids at {{ $value | humanizePercentage }} of its limit",
        "At its pids limit {{ $labels.name }} cannot fork (the limit protects the host). "
        "Look for a process leaking threads or children inside it; raise the limit with a "
        "larger flavor only if the load is real.",
        threshold=0.9,
        keeps=True,
    ),
    Rule(
        "DockyardInstanceMemoryNearLimit",
        "dockyard_instance_memory_working_set_bytes / (dockyard_instance_memory_limit_bytes > 0)"
        " > $THRESHOLD",
        "10m",
        "warning",
        "instance",
        "{{ $labels.name }}: memory at {{ $value | humanizePercentage }} of its limit",
        "{{ $labels.name }} is close to its memory limit: next come OOM kills. Resize it "
        "to a larger flavor or find what grows inside it.",
        threshold=0.9,
        keeps=True,
    ),
    Rule(
        "DockyardInstanceCPUThrottled",
        "rate(dockyard_instance_cpu_throttled_periods_total[5m])"
        " / (rate(dockyard_instance_cpu_periods_total[5m]) > 0) > $THRESHOLD",
        "15m",
        "warning",
        "instance",
        "{{ $labels.name }}: throttled in {{ $value | humanizePercentage }} of CPU periods",
        "{{ $labels.name }} keeps hitting its CPU quota, so its latency suffers. Resize it "
        "to more vCPUs, or find the busy process with `top` inside it.",
        threshold=0.5,
    ),
    Rule(
        "DockyardInstanceLoadAboveCores",
        "dockyard_instance_load1 > dockyard_instance_cpu_limit_cores * $THRESHOLD",
        "15m",
        "warning",
        "instance",
        "{{ $labels.name }}: load {{ $value }} above its cores for 15 minutes",
        "More tasks want to run in {{ $labels.name }} than it has cores (its /proc view's "
        "load against its quota or cpuset). Resize it to more vCPUs or spread the work.",
        threshold=1,
        keeps=True,
    ),
)

DRIFT_RULES = (
    Rule(
        "DockyardHostDrift",
        "dockyard_host_drift > 0",
        "10m",
        "warning",
        "host",
        "{{ $labels.host }} differs from the cluster's baseline in {{ $labels.item }}",
        "{{ $labels.host }}'s {{ $labels.item }} is not the cluster's. See "
        "`dockyard host check {{ $labels.host }}` and bring the host back to the baseline "
        "(or change the declared baseline).",
    ),
    Rule(
        "DockyardInstanceDrift",
        "dockyard_instance_drift > 0",
        "10m",
        "warning",
        "instance",
        "{{ $labels.name }}'s container differs from its spec in {{ $labels.item }}",
        "The container of {{ $labels.name }} on {{ $labels.host }} does not match its "
        "desired {{ $labels.item }}. The agent should converge it; if it does not, read "
        "the agent's log, then restart the instance.",
        keeps=True,
    ),
)

GROUPS = {
    "dockyard-hosts": HOST_RULES,
    "dockyard-instances": INSTANCE_RULES,
    "dockyard-drift": DRIFT_RULES,
}


def all_rules() -> list[Rule]:
    return [rule for rules in GROUPS.values() for rule in rules]


def render(tuning: Tuning | None = None, interval: str | None = None) -> dict[str, Any]:
    """The rule file: one group per GROUPS entry, with ``tuning``'s overrides."""
    tuning = tuning or Tuning()
    return {
        "groups": [
            {"name": name, **({"interval": interval} if interval else {}),
             "rules": [_rule(rule, tuning.of(rule.alert)) for rule in rules]}
            for name, rules in GROUPS.items()
        ]
    }  # fmt: skip


def _rule(rule: Rule, override: Override) -> dict[str, Any]:
    threshold = override.threshold if override.threshold is not None else rule.threshold
    expr = rule.expr if threshold is None else rule.expr.replace("$THRESHOLD", f"{threshold:g}")
    labels = {"severity": rule.severity, "scope": rule.scope}
    if rule.outage:
        labels["outage"] = "host"
    keep = {"keep_firing_for": override.keep_firing_for or KEEP_FIRING} if rule.keeps else {}
    return {
        "alert": rule.alert,
        "expr": expr,
        "for": override.for_ or rule.for_,
        **keep,
        "labels": labels,
        "annotations": {"summary": rule.summary, "description": rule.description},
    }
