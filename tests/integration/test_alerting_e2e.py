"""Alerts end to end, with the real components: `dockyard up --monitoring` runs the agent,
Prometheus (Dockyard's rules, tuned: 1 s intervals, for-durations of 3 s, pid_max's
threshold lowered) and Alertmanager; receivers and routes are added with the CLI; a
local webhook target and an aiosmtpd SMTP server get what a user would get.

One stack for the module (the tests run in order: the silence and agent tests use the
OOM alert, still firing, as their control and subject; the agent test runs last).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.api.alerting import Mailbox, Target, http_target, smtp_server
from tests.integration.cluster import free_ports, private_dockerd, run, wait_for
from tests.integration.conftest import IMAGE_CACHE, _can_run
from tests.integration.test_up import DEMO_BRIDGE, Up

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("prometheus-alertmanager") is None,
        reason="needs prometheus and prometheus-alertmanager (scripts/packages.sh)",
    ),
]

HOST = "uptest"  # Up's --host-name
OUTAGES = ("DockyardAgentDown", "DockyardHostDown")
TUNING = {
    "interval": "1s",
    "grouping": {"group_wait": "1s", "group_interval": "2s", "repeat_interval": "4s"},
    # pid_max is the machine's and never changed: the threshold comes down instead
    # (0.001 of 32768 is 33 tasks: any host running this test has more)
    # and one restart of a key process counts as flapping (> 3 in 15 min untuned)
    "rules": {
        "*": {"for": "3s"},
        "DockyardHostTasksNearPidMax": {"threshold": 0.001},
        "DockyardProcessFlapping": {"threshold": 0},
    },
}


@dataclass
class Stack:
    up: Up
    hook: Target
    mail: Mailbox
    am: str  # ALERTMANAGER_URL
    prom: str  # PROMETHEUS_URL

    def cli(self, *args: str) -> str:
        r = self.up.cli(*args)
        assert r.returncode == 0, f"dockyard {' '.join(args)}: {r.stderr}"
        return r.stdout

    def mark(self) -> int:
        """Where the webhook's record stands now (for ``delivered(since=...)``)."""
        return len(self.hook.at("/hook"))

    def delivered(self, alertname: str, since: int = 0, status: str = "firing") -> list[Any]:
        """Alerts the webhook got (from hit ``since`` on), as Alertmanager sent them."""
        return [
            a
            for h in self.hook.at("/hook")[since:]
            for a in h.json()["alerts"]
            if a["labels"]["alertname"] == alertname and a["status"] == status
        ]

    def am_alerts(self, alertname: str) -> list[Any]:
        r = httpx.get(f"{self.am}/api/v2/alerts", params={"filter": f'alertname="{alertname}"'})
        r.raise_for_status()
        return list(r.json())


def _env(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("alerting-e2e")
    tuning = tmp / "tuning.json"
    tuning.write_text(json.dumps(TUNING))
    base = free_ports(2)
    ports = f"{base},{base + 1}"
    try:
        with private_dockerd("ae") as d, http_target() as hook, smtp_server() as mail:
            up = Up(d.root / "state", d.url, "127.0.0.1", "--monitoring",
                    "--monitoring-ports", ports, "--alert-tuning", str(tuning))  # fmt: skip
            up.env["DOCKYARD_METRICS_SECONDS"] = "1"  # the agent samples every second
            up.start()
            try:
                env = _env(up.state / "monitoring.env")
                s = Stack(up, hook, mail, env["ALERTMANAGER_URL"], env["PROMETHEUS_URL"])
                _receivers(s)
                yield s
            finally:
                assert up.stop() == 0
    finally:
        run("ip", "link", "del", DEMO_BRIDGE, check=False)


def _receivers(s: Stack) -> None:
    """A webhook and an e-mail receiver, every alert routed to both, as an admin does it."""
    wait_for(lambda: HOST in s.cli("host", "list"), 30, "the host to register")
    s.cli("alert", "receiver", "add", "hook", "--webhook", f"{s.hook.url}/hook")
    s.cli("alert", "receiver", "add", "mail", "--email", "oncall@example.test",
          "--smtp", f"127.0.0.1:{s.mail.port}", "--smtp-from", "dockyard@example.test",
          "--smtp-no-tls")  # fmt: skip
    s.cli("alert", "route", "add", "--receiver", "hook", "--continue")
    s.cli("alert", "route", "add", "--receiver", "mail")

    def loaded() -> bool:
        config = httpx.get(f"{s.am}/api/v2/status", timeout=5).json()["config"]["original"]
        return f"{s.hook.url}/hook" in config and f"127.0.0.1:{s.mail.port}" in config

    wait_for(loaded, 30, "Alertmanager to reload with the receivers", interval=0.5)


def _prom_has(s: Stack, query: str) -> bool:
    r = httpx.get(f"{s.prom}/api/v1/query", params={"query": query}, timeout=5)
    return r.status_code == 200 and bool(r.json()["data"]["result"])


def _subjects(s: Stack) -> list[str]:
    return [str(m["Subject"]) for m in list(s.mail.messages)]


def test_an_oom_kill_in_an_instance_reaches_the_webhook_and_the_mailbox(stack: Stack) -> None:
    s = stack
    s.cli("flavor", "create", "mem32", "--vcpus", "1", "--memory", "32")
    server = json.loads(s.cli("server", "create", "hog", "--image", "demo", "--flavor", "mem32",
                              "--network", "demo", "--wait", "-f", "json"))  # fmt: skip
    iid = server["id"]
    # the counter is scraped from 0 first, or its first kill is no increase
    wait_for(
        lambda: _prom_has(s, f'dockyard_instance_oom_kills_total{{instance_id="{iid}"}}'),
        60, "Prometheus to scrape the instance's OOM counter", interval=0.5,
    )  # fmt: skip
    assert s.delivered("DockyardInstanceOOMKill") == []
    client = docker.DockerClient(base_url=s.up.env["DOCKER_HOST"])
    try:
        r = client.containers.get(f"dy-{iid}").exec_run(["tail", "/dev/zero"])  # grows: killed
    finally:
        client.close()
    assert r.exit_code == 137
    killed = time.monotonic()

    def oom_alert() -> Any:
        return next(iter(s.delivered("DockyardInstanceOOMKill")), None)

    alert = wait_for(oom_alert, 60, "the OOM alert at the webhook", interval=0.5)
    print(f"\nOOM kill -> webhook: {time.monotonic() - killed:.1f} s")
    labels = alert["labels"]
    assert (labels["host"], labels["instance_id"], labels["name"]) == (HOST, iid, "hog")
    assert labels["scope"] == "instance" and "hog" in alert["annotations"]["summary"]
    subject = wait_for(
        lambda: next((t for t in _subjects(s) if "DockyardInstanceOOMKill" in t), None),
        30, "the OOM alert's e-mail at the SMTP server", interval=0.5,
    )  # fmt: skip
    assert subject.startswith("[FIRING") and "hog" in subject, subject
    print(f"e-mail subject: {subject}\nwebhook labels: {labels}")


def test_host_tasks_near_pid_max_is_delivered(stack: Stack) -> None:
    alert = wait_for(
        lambda: next(iter(stack.delivered("DockyardHostTasksNearPidMax")), None),
        60, "DockyardHostTasksNearPidMax at the webhook", interval=0.5,
    )  # fmt: skip
    assert alert["labels"]["host"] == HOST and alert["labels"]["severity"] == "critical"
    wait_for(
        lambda: any("DockyardHostTasksNearPidMax" in t for t in _subjects(stack)),
        30, "its e-mail", interval=0.5,
    )  # fmt: skip


def test_a_silence_holds(stack: Stack) -> None:
    s, name = stack, "DockyardHostTasksNearPidMax"
    control = "DockyardInstanceOOMKill"  # the first test's, firing for 10 minutes
    if not s.delivered(control):
        pytest.skip("needs the OOM alert of the first test, firing, as the control")
    # it fires all along and is sent again every repeat interval (4 s) ...
    first = s.mark()
    wait_for(lambda: s.delivered(name, since=first), 30, f"{name} to be sent again", interval=0.5)
    sid = s.cli("alert", "silence", "create", "--match", f"alertname={name}",
                "--match", f"host={HOST}", "--duration", "10m",
                "--comment", "e2e: pid_max known").strip()  # fmt: skip

    def silenced() -> bool:
        return any(a["status"]["silencedBy"] == [sid] for a in s.am_alerts(name))

    wait_for(silenced, 20, "Alertmanager to show the alert silenced", interval=0.5)
    # ... but not once silenced, while another group's firing alert keeps being sent
    since = s.mark()
    wait_for(lambda: len(s.delivered(control, since=since)) >= 2, 30,
             "a control alert to be re-sent twice after the silence", interval=0.5)  # fmt: skip
    assert s.delivered(name, since=since) == []
    assert s.am_alerts(name)[0]["status"]["state"] == "suppressed"


def test_a_killed_key_process_is_delivered(stack: Stack) -> None:
    """The Debian machine image (cached: the same recipe as test_metrics's) with a key
    program "web" under supervisord; killed from outside, supervisord restarts it."""
    if shutil.which("mmdebstrap") is None:
        pytest.skip("needs mmdebstrap for the machine image (see .ci/run)")
    s = stack
    s.cli("image", "build-base", "machine", "--cache-dir", IMAGE_CACHE,
          "--program", "web=/usr/bin/python3 -m http.server 8080")  # fmt: skip
    s.cli("flavor", "create", "m256", "--vcpus", "1", "--memory", "256")
    server = json.loads(s.cli("server", "create", "keyed", "--image", "machine", "--flavor",
                              "m256", "--network", "demo", "--wait", "--timeout", "180",
                              "-f", "json"))  # fmt: skip
    iid = server["id"]
    web = f'instance_id="{iid}",process="web"'
    up = f"dockyard_instance_process_up{{{web}}} == 1"
    wait_for(lambda: _prom_has(s, up), 90, "Prometheus to see web up", interval=0.5)
    assert _prom_has(s, f"dockyard_instance_process_restarts_total{{{web}}} == 0")
    client = docker.DockerClient(base_url=s.up.env["DOCKER_HOST"])
    try:  # from outside, as a crash would: the agent only reads supervisord
        client.containers.get(f"dy-{iid}").exec_run(["pkill", "-f", "http.server"])
    finally:
        client.close()
    killed = time.monotonic()

    def flapping() -> Any:
        found = [a for a in s.delivered("DockyardProcessFlapping")
                 if a["labels"]["instance_id"] == iid]  # fmt: skip
        return found and found[0]

    alert = wait_for(flapping, 60, "DockyardProcessFlapping at the webhook", interval=0.5)
    print(f"\nkey process killed -> webhook: {time.monotonic() - killed:.1f} s")
    labels = alert["labels"]
    assert (labels["host"], labels["name"], labels["process"]) == (HOST, "keyed", "web")
    wait_for(
        lambda: any("DockyardProcessFlapping" in t for t in _subjects(s)),
        30, "its e-mail", interval=0.5,
    )  # fmt: skip


def _agent_pid(up: Up) -> int:
    """The agent `dockyard up` started, among its children by PID."""
    assert up.proc is not None
    task = Path(f"/proc/{up.proc.pid}/task")
    children = [int(p) for t in task.iterdir() for p in (t / "children").read_text().split()]
    agents = [
        pid
        for pid in children
        if b"dockyard.compute.cli" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]
    assert len(agents) == 1, f"the agent among up's children {children}: {agents}"
    return agents[0]


def _oom_of(s: Stack, iid: str) -> Any:
    """The OOM alert of instance ``iid`` as Alertmanager shows it, or None."""
    found = [a for a in s.am_alerts("DockyardInstanceOOMKill") if a["labels"]["instance_id"] == iid]
    return found[0] if found else None


def _outage_inhibits(s: Stack, iid: str) -> None:
    """The instance's OOM alert keeps firing through the outage (increase() over 10 min
    still has the samples from before it) and is inhibited: shown so, and not sent."""

    def inhibited() -> Any:
        alert = _oom_of(s, iid)
        return alert and alert["status"]["inhibitedBy"] and alert

    shown = wait_for(inhibited, 30, "Alertmanager to show the OOM alert inhibited", interval=0.5)
    assert shown["status"]["state"] == "suppressed"
    # by the agent's outage (or, once the server misses 3 heartbeats, the host's)
    outages = {a["fingerprint"] for n in OUTAGES for a in s.am_alerts(n)}
    assert set(shown["status"]["inhibitedBy"]) <= outages, (shown, outages)
    after = s.mark()  # the outage is sent again twice meanwhile; the OOM alert never

    def outage_resent() -> bool:
        return sum(len(s.delivered(n, since=after)) for n in OUTAGES) >= 2

    wait_for(outage_resent, 30, "the outage alert to be re-sent twice", interval=0.5)
    again = s.delivered("DockyardInstanceOOMKill", since=after)
    assert [a for a in again if a["labels"]["instance_id"] == iid] == []


def test_a_stopped_agent_pages_and_inhibits_its_instances_alerts(stack: Stack) -> None:
    s = stack
    oom = next(iter(s.delivered("DockyardInstanceOOMKill")), None)
    if oom is None:
        pytest.skip("needs the OOM alert of the first test, firing, as the instance alert")
    iid = oom["labels"]["instance_id"]
    before = _oom_of(s, iid)
    assert before and before["status"]["state"] == "active"  # sent every 4 s until now
    since = s.mark()
    pid = _agent_pid(s.up)
    # SIGSTOP: the agent answers nothing, as a hung or dead one; SIGKILL would make
    # `dockyard up` stop the whole stack (a child exited), Prometheus included
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        alert = wait_for(
            lambda: next(iter(s.delivered("DockyardAgentDown", since=since)), None),
            60, "DockyardAgentDown at the webhook", interval=0.5,
        )  # fmt: skip
        print(f"\nagent stopped -> webhook: {time.monotonic() - stopped:.1f} s")
        assert alert["labels"]["host"] == HOST and alert["labels"]["outage"] == "host"
        wait_for(
            lambda: any("DockyardAgentDown" in t for t in _subjects(s)),
            30, "its e-mail", interval=0.5,
        )  # fmt: skip
        _outage_inhibits(s, iid)
    finally:
        os.kill(pid, signal.SIGCONT)
