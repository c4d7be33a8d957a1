"""``dockyard-agent``: make this host match what the server wants.

Threads:
    poll       long-polls the server for this host's desired state
    heartbeat  every 10 s; re-registers if the server forgot the host
    events     dockerd's container start/die events wake the reconciler
    main       reconcile pass on every wake-up, and every 10 s regardless
    workers    one step per instance at a time (ThreadPoolExecutor)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from dockyard import logs, model
from dockyard.compute import monitor
from dockyard.compute.client import ServerClient
from dockyard.compute.driver import ComputeDriver, Observed
from dockyard.compute.procfs import ProcView
from dockyard.compute.reconcile import Step, plan
from dockyard.compute.store import Store
from dockyard.compute.worker import Worker
from dockyard.errors import DockyardError, PermanentError, TemporaryError
from dockyard.network import firewall, plumbing

log = logging.getLogger("dockyard.agent")
RESYNC_SECONDS = 10.0
MONITOR_SECONDS = 1.0  # /proc views and limit counters
MAX_TEMPORARY_FAILURES = 5


@dataclass
class AgentConfig:
    server: str
    token: str
    host: str
    state_dir: Path
    availability_zone: str = "nova"
    networks: list[str] = field(default_factory=lambda: ["*"])
    bridge_nf: str = "allow"
    labels: dict[str, str] = field(default_factory=dict)
    reserved_cores: list[int] = field(default_factory=list)
    reserved_memory_mb: int = 0
    cpu_allocation_ratio: float = 16.0
    ram_allocation_ratio: float = 1.0
    workers: int = 16


class Agent:
    def __init__(self, cfg: AgentConfig, driver: ComputeDriver, client: ServerClient) -> None:
        self.cfg, self.driver, self.client = cfg, driver, client
        self.store = Store(cfg.state_dir)
        self.procview = ProcView()
        self._observed: list[Observed] = []  # the last reconcile pass's view of dockerd
        self.worker = Worker(driver, client, self.store, self.procview)
        cached = self.store.load_desired()
        self.desired = {i.id: i for i in cached.instances} if cached else None
        self.generation = cached.generation if cached else -1
        self.host_volumes = _volume_ids(cached)  # the server's list of this host's volumes
        self.stop_event, self.wake = threading.Event(), threading.Event()
        self._busy: set[str] = set()
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        self._settled: dict[str, int] = {}
        self._lock = threading.Lock()
        self.labels = dict(cfg.labels)
        self._pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="step")

    # --- lifecycle

    def run(self) -> None:
        state, message = firewall.bridge_netfilter(self.cfg.bridge_nf)
        # the sysctl is left as found; the label says what bridged traffic meets
        log.log(logging.WARNING if state == "on" else logging.INFO, "%s", message)
        self.labels = {**self.cfg.labels, "dockyard.bridge-nf": state}
        self.wake.set()  # reconcile from the local cache before the server answers
        loops = (
            self._register_then_poll,
            self._heartbeat_loop,
            self._events_loop,
            self._monitor_loop,
        )
        for target in loops:
            threading.Thread(target=target, daemon=True, name=target.__name__).start()
        while not self.stop_event.is_set():
            self.wake.wait(RESYNC_SECONDS)
            self.wake.clear()
            if self.stop_event.is_set():
                break
            try:
                self.reconcile_once()
            except DockyardError as exc:
                log.warning("reconcile pass failed, will retry: %s", exc.detail)
                self.stop_event.wait(1)
            except Exception:
                log.exception("reconcile pass crashed, will retry")
                self.stop_event.wait(1)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    def register(self) -> None:
        info = self.driver.info()
        self.client.register(
            model.HostRegister(
                name=self.cfg.host,
                availability_zone=self.cfg.availability_zone,
                cores=info.cores,
                memory_mb=info.memory_mb,
                disk_gb=info.disk_gb,
                docker_version=info.runtime_version,
                labels={**self.labels, "dockyard.storage": info.storage},
                reserved_cores=self.cfg.reserved_cores,
                reserved_memory_mb=self.cfg.reserved_memory_mb,
                cpu_allocation_ratio=self.cfg.cpu_allocation_ratio,
                ram_allocation_ratio=self.cfg.ram_allocation_ratio,
                root_disk_quota=info.root_disk_quota,
                networks=self.cfg.networks,
            )
        )
        log.info("registered host %s (%d cores, %d MB)", self.cfg.host, info.cores, info.memory_mb)

    # --- background loops

    def _register_then_poll(self) -> None:
        self._retry_forever(self.register)
        while not self.stop_event.is_set():
            try:
                state = self.client.desired(since=self.generation, wait=25)
            except DockyardError as exc:
                log.warning("long poll failed: %s", exc.detail)
                self.stop_event.wait(1)
                continue
            if state.generation != self.generation:
                self.store.save_desired(state)
                with self._lock:
                    self.desired = {i.id: i for i in state.instances}
                    self.generation = state.generation
                    self.host_volumes = _volume_ids(state)
                self.wake.set()

    def _heartbeat_loop(self) -> None:
        while not self.stop_event.wait(RESYNC_SECONDS):
            try:
                self.client.heartbeat()
            except PermanentError as exc:
                if exc.extra.get("status") == 404:
                    self._retry_forever(self.register)
            except DockyardError as exc:
                log.warning("heartbeat failed: %s", exc.detail)

    def _events_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                for _ in self.driver.events(self.stop_event):
                    self.wake.set()
            except TemporaryError as exc:
                log.info("container events: %s; reconnecting", exc.detail)
                self.wake.set()
                self.stop_event.wait(1)

    def _monitor_loop(self) -> None:
        last_throttle: dict[str, float] = {}
        while not self.stop_event.wait(MONITOR_SECONDS):
            desired, _ = self.snapshot()
            # what the last reconcile pass saw: passes run on every start/die event and
            # every 10 s, so this is current without asking dockerd every second
            for obs in self._observed:
                want = (desired or {}).get(obs.instance_id)
                if want is None or not obs.running:
                    continue
                try:
                    if want.limits.procview:
                        self.procview.refresh(
                            want.id,
                            self.store.files_dir(want.id),
                            obs.pid,
                            obs.started_at,
                            want.limits.swap_mb,
                        )
                    self.procview.refresh_disk(
                        want.id, self.store.files_dir(want.id), obs.writable_dir, want.disk_gb
                    )
                    self._check_limits(want, obs, last_throttle)
                except (OSError, ValueError):
                    continue  # it stopped meanwhile; the next round sees its new cgroup
                except DockyardError as exc:
                    log.warning("could not report events of %s: %s", want.name, exc.detail)

    def _check_limits(
        self, want: model.DesiredInstance, obs: Observed, last_throttle: dict[str, float]
    ) -> None:
        saved = self.store.counters(want.id, obs.started_at)
        prev = monitor.Counters(**saved)
        now = monitor.read(self.procview.cgroup_of(want.id, obs.pid))
        since = time.monotonic() - last_throttle.get(want.id, -1e9)
        due = since >= monitor.THROTTLE_REPORT_SECONDS
        evs, remembered = monitor.events(prev, now, want.pids_limit, want.memory_mb, due)
        if remembered == prev and saved:
            return
        if evs:
            self.client.events(want.id, evs)
            for ev in evs:
                log.info("%s: %s", want.name, ev.message)
                if ev.kind == model.EventKind.cpu_throttled:
                    last_throttle[want.id] = time.monotonic()
        self.store.save_counters(want.id, obs.started_at, dataclasses.asdict(remembered))

    def _retry_forever(self, fn: Callable[[], object]) -> None:
        delay = 0.2
        while not self.stop_event.is_set():
            try:
                fn()
                return
            except DockyardError as exc:
                log.warning("%s failed, retrying in %.1fs: %s", fn.__name__, delay, exc.detail)
                self.stop_event.wait(delay)
                delay = min(delay * 2, 5)

    # --- reconcile

    def snapshot(self) -> tuple[dict[str, model.DesiredInstance] | None, int]:
        with self._lock:
            return (dict(self.desired) if self.desired is not None else None), self.generation

    def reconcile_once(self) -> None:
        desired, generation = self.snapshot()
        observed = {o.instance_id: o for o in self.driver.list()}
        self._observed = list(observed.values())
        p = plan(desired, observed, self.store.records(), plumbing.links(), self.store.known_ids())
        try:
            firewall.sync_bridges()
        except DockyardError as exc:
            log.warning("could not let bridged traffic through iptables: %s", exc.detail)
        now = time.monotonic()
        for iid, step in p.steps.items():
            # done and reported at this generation: wait for the server's next word
            if self._settled.get(iid) == generation:
                continue
            if self._claim(iid, now):
                assert desired is not None
                self._pool.submit(self._run_step, iid, step, desired[iid], generation)
        for iid in p.orphans:
            if self._claim(iid, now):
                self._pool.submit(self._run_orphan, iid)
        for name in p.stale_links:
            plumbing.remove_stale(name)
        if not p.orphans:  # an orphan container may still hold a volume: it goes first
            self.worker.sweep_volumes(desired, self.host_volumes)

    def _claim(self, iid: str, now: float) -> bool:
        with self._lock:
            if iid in self._busy or self._not_before.get(iid, 0) > now:
                return False
            self._busy.add(iid)
            return True

    def _run_step(self, iid: str, step: Step, want: model.DesiredInstance, gen: int) -> None:
        started = time.monotonic()
        try:
            self.worker.run(step, want)
            log.info("%s %s done in %.3fs", step.value, want.name, time.monotonic() - started)
            self._failures.pop(iid, None)
            if step in (Step.spawn, Step.destroy, Step.report) or want.task_state is not None:
                self._settled[iid] = gen
        except TemporaryError as exc:
            self._backoff(iid, step, want, exc)
        except Exception:
            log.exception("%s of %s crashed", step.value, want.name)
            self._backoff(iid, step, want, TemporaryError("unexpected agent error; see its log"))
        finally:
            self._done(iid)

    def _run_orphan(self, iid: str) -> None:
        try:
            log.info("removing %s: no longer wanted on this host", iid)
            self.worker.destroy(iid)
        except DockyardError as exc:
            log.warning("could not remove orphan %s: %s", iid, exc.detail)
        finally:
            self._done(iid)

    def _backoff(
        self, iid: str, step: Step, want: model.DesiredInstance, exc: DockyardError
    ) -> None:
        n = self._failures.get(iid, 0) + 1
        self._failures[iid] = n
        log.warning("%s of %s failed (%d): %s", step.value, want.name, n, exc.detail)
        if n >= MAX_TEMPORARY_FAILURES and step == Step.spawn:
            self._failures.pop(iid, None)
            try:
                self.worker.run_failed(step, want, f"gave up after {n} tries: {exc.detail}")
            except DockyardError as again:
                log.warning("could not report the failure of %s: %s", want.name, again.detail)
            return
        self._not_before[iid] = time.monotonic() + min(0.5 * 2**n, 10)

    def _done(self, iid: str) -> None:
        with self._lock:
            self._busy.discard(iid)
        self.wake.set()


def _volume_ids(state: model.DesiredState | None) -> list[str] | None:
    """None when unknown (no state, or a server that does not list volumes)."""
    if state is None or state.volumes is None:
        return None
    return [v.id for v in state.volumes]


def _cores(p: argparse.ArgumentParser, text: str) -> list[int]:
    """'0-1,3' -> [0, 1, 3]."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        try:
            out += range(int(first), int(last or first) + 1)
        except ValueError:
            p.error(f"--reserved-cores {text!r}: write core numbers like 0 or 0-1,3")
    return out


def _labels(p: argparse.ArgumentParser, pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            p.error(f"--label {pair!r}: write KEY=VALUE")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="dockyard-agent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--server", default=os.environ.get("DOCKYARD_URL", "http://127.0.0.1:8787"))
    p.add_argument("--token-file", type=Path, required=True, help="this host's agent token")
    p.add_argument("--host-name", default=socket.gethostname())
    p.add_argument("--state-dir", type=Path, default=Path("/var/lib/dockyard-agent"))
    p.add_argument("--availability-zone", default="nova")
    p.add_argument(
        "--network",
        action="append",
        dest="networks",
        help="a network this host is attached to (repeat; default all)",
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a host label for the scheduler and the console (repeatable)",
    )
    p.add_argument(
        "--reserved-cores",
        default="",
        metavar="LIST",
        help="cores kept for the host itself, e.g. 0 or 0-1",
    )
    p.add_argument("--reserved-memory-mb", type=int, default=0)
    p.add_argument(
        "--cpu-allocation-ratio",
        type=float,
        default=16.0,
        help="shared vCPUs per free physical core",
    )
    p.add_argument("--ram-allocation-ratio", type=float, default=1.0)
    p.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST"))
    p.add_argument(
        "--bridge-nf",
        choices=["allow", "leave"],
        default="allow",
        help="allow: accept traffic between the ports of each Dockyard bridge in iptables "
        "(DOCKER-USER or FORWARD) in case br_netfilter sends it there; leave: add no rule "
        "(docs/architecture.md)",
    )
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logs.configure(args.log_level)
    from dockyard.compute.drivers.docker import DockerDriver

    cfg = AgentConfig(
        server=args.server,
        token=args.token_file.read_text().strip(),
        host=args.host_name,
        state_dir=args.state_dir,
        availability_zone=args.availability_zone,
        networks=args.networks or ["*"],
        bridge_nf=args.bridge_nf,
        labels=_labels(p, args.label),
        reserved_cores=_cores(p, args.reserved_cores),
        reserved_memory_mb=args.reserved_memory_mb,
        cpu_allocation_ratio=args.cpu_allocation_ratio,
        ram_allocation_ratio=args.ram_allocation_ratio,
    )
    _check_host_flags(p, cfg, *_host_capacity())
    driver = DockerDriver(cfg.host, args.docker_host)
    agent = Agent(cfg, driver, ServerClient(cfg.server, cfg.token, cfg.host))
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    agent.run()


def _check_host_flags(
    p: argparse.ArgumentParser, cfg: AgentConfig, cores: int, memory_mb: int
) -> None:
    """Refuse flags the server would refuse, now (exit 2 naming the flag), instead of
    retrying forever; judged against this host's ``cores`` and ``memory_mb``."""
    outside = sorted(c for c in set(cfg.reserved_cores) if not 0 <= c < cores)
    if outside:
        p.error(
            f"--reserved-cores: cores {outside} do not exist on this {cores}-core host "
            f"(it has 0-{cores - 1})"
        )
    if len(set(cfg.reserved_cores)) >= cores:
        p.error(f"--reserved-cores: reserve fewer than this host's {cores} cores, or none is left")
    if not 0 <= cfg.reserved_memory_mb < memory_mb:
        p.error(
            f"--reserved-memory-mb {cfg.reserved_memory_mb}: give 0 up to less than this "
            f"host's {memory_mb} MB"
        )
    try:
        model.HostRegister(
            name=cfg.host,
            availability_zone=cfg.availability_zone,
            cores=min(cores, model.MAX_HOST_CORES),
            memory_mb=min(max(memory_mb, 64), model.MAX_HOST_MEMORY_MB),
            disk_gb=0,
            labels=cfg.labels,
            networks=cfg.networks,
            reserved_cores=cfg.reserved_cores,
            reserved_memory_mb=cfg.reserved_memory_mb,
            cpu_allocation_ratio=cfg.cpu_allocation_ratio,
            ram_allocation_ratio=cfg.ram_allocation_ratio,
        )
    except pydantic.ValidationError as exc:
        p.error("; ".join(_flag_problem(e) for e in exc.errors()))


def _flag_problem(error: Any) -> str:
    loc = error.get("loc") or ()
    flag = {"name": "host-name"}.get(str(loc[0]), str(loc[0]).replace("_", "-")) if loc else None
    msg = str(error["msg"])
    msg = msg[:1].lower() + msg[1:]
    return f"--{flag}: {msg}" if flag else msg


def _host_capacity() -> tuple[int, int]:
    """Cores (as dockerd counts them: the CPUs this process may run on) and MB of memory."""
    cores = len(os.sched_getaffinity(0))
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return cores, memory_mb


if __name__ == "__main__":
    main()
