"""``dockyard-agent``: make this host match what the server wants.

Threads:
    poll       long-polls the server for this host's desired state
    heartbeat  every 10 s, or a third of a shorter --host-down-after of the server
               (its answer sets the pace); re-registers if the server forgot the host
    events     dockerd's container start/die events wake the reconciler (not the start
               of an instance whose step runs: that step's end does)
    monitor    every second: /proc views and limit counters (compute/monitor.py); every
               10 s the instances' drift from their spec (compute/drift.py)
    metrics    every 5 s: the figures /metrics serves (compute/metrics.py); the scrape
               tokens are asked for at registration and with every heartbeat
    health     one asyncio loop running every instance's health check on its own clock
               (compute/health.py); a change is reported at once ("health-report")
    main       reconcile pass on every wake-up, and every 10 s regardless
    workers    one step per instance at a time (ThreadPoolExecutor)

The host comes in through protocols (docs/architecture.md, "The agent's
seams"): ComputeDriver, Plumber, ViewWriter, Meter, VolumeStore, Transfer (volume
data on the move) and Server.
The command line that wires the real ones is compute/cli.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from dockyard import __version__, model
from dockyard.compute.client import Server
from dockyard.compute.drift import DRIFT_ROUNDS, HostSurvey, InstanceChecker, host_baseline
from dockyard.compute.driver import ComputeDriver, Observed
from dockyard.compute.exporter import Endpoint
from dockyard.compute.health import HEALTH_METRIC, HealthChecker, Prober, Target
from dockyard.compute.metrics import SAMPLE_SECONDS
from dockyard.compute.monitor import LimitMonitor, Meter
from dockyard.compute.plumber import Plumber
from dockyard.compute.probes import HostProber
from dockyard.compute.procfs import ViewWriter
from dockyard.compute.reconcile import Step, plan, power_of
from dockyard.compute.store import Store
from dockyard.compute.transfer import Transfer
from dockyard.compute.volumes import VolumeStore
from dockyard.compute.worker import Worker
from dockyard.errors import DockyardError, PermanentError, TemporaryError
from dockyard.model.health import counts as health_counts
from dockyard.monitor.drift import Sample, instance_drift_samples

log = logging.getLogger("dockyard.agent")
RESYNC_SECONDS = 10.0
GUARD_SECONDS = 1.0  # ports' anti-spoofing rules are checked at most this often
MAX_TEMPORARY_FAILURES = 5
# The server declares a host down after 30 s without a heartbeat (db/session.py's
# HOST_DOWN_AFTER, its --host-down-after) and may then evacuate its instances: an agent
# away longer must not start anything from its cached desired state, which may name
# instances that now run elsewhere (fenced), before the server has answered again.
# dockyard-agent --host-down-after sets it to match a server started with another value.
CACHE_TRUSTED_FOR = 30.0
# seconds a heartbeat waits for the host's survey (dockerd's info is in it) before it
# beats without it: a wedged dockerd (120 s a call) must not make a live host look down
SURVEY_WAIT = 5.0
# steps done once per generation: the next pass waits for the server's next word
_STARTS = (Step.spawn, Step.start, Step.reboot, Step.rebuild)  # what puts its IP on the wire
_SETTLING = (Step.spawn, Step.destroy, Step.report, Step.snapshot, Step.fence)


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
    # steps at once: 20 creates that arrive together each get a thread at once (with 16,
    # four waited for a whole create under load); the threads mostly wait on dockerd
    workers: int = 32
    cache_trusted_for: float = CACHE_TRUSTED_FOR  # seconds since the server's last answer


class Agent:
    """``pool`` runs the steps (a thread pool of ``cfg.workers``; tests pass one that
    runs them at once) and ``clock`` times the back-off (time.monotonic)."""

    def __init__(
        self,
        cfg: AgentConfig,
        driver: ComputeDriver,
        client: Server,
        *,
        plumber: Plumber,
        views: ViewWriter,
        meter: Meter,
        volumes: VolumeStore,
        transfer: Transfer | None = None,
        metrics: Endpoint | None = None,
        pool: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        survey: HostSurvey | None = None,
        prober: Prober | None = None,
    ) -> None:
        self.cfg, self.driver, self.client, self.plumber = cfg, driver, client, plumber
        self.store = Store(cfg.state_dir)
        self._observed: list[Observed] = []  # the last reconcile pass's view of dockerd
        self.health = HealthChecker(prober or HostProber(driver), self._report_health)
        self.worker = Worker(
            driver,
            client,
            self.store,
            plumber=plumber,
            views=views,
            meter=meter,
            volumes=volumes,
            transfer=transfer,
            health=self.health.health,
        )
        self.worker.clock = clock
        self.monitor = LimitMonitor(self.store, client, views, meter)
        self.survey = survey or HostSurvey()
        self.drift = InstanceChecker(self.store, meter, plumber)
        self._rounds = 0
        self.metrics = metrics
        self._clock, self._wall = clock, wall
        # when the server last answered: read from disk once (an agent restarted while
        # cut off stays cut off), then kept here; every pass asks it
        self._heard = self.store.last_contact()
        self.desired, self.generation, self.host_volumes = _unpack(self._trusted_cache())
        self.stop_event, self.wake = threading.Event(), threading.Event()
        self.beat_every = RESYNC_SECONDS  # until the server's first answer says otherwise
        self._survey_pool = ThreadPoolExecutor(1, thread_name_prefix="survey")
        self._surveying: Future[model.HostStatus] | None = None
        self._busy: set[str] = set()
        # steps ended so far, and the count at each instance's last one: a pass whose
        # listing of dockerd began before an instance's step ended plans nothing for it
        self._ended = 0
        self._ended_at: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        self._settled: dict[str, int] = {}
        self._guarded_at = float("-inf")
        self._was_cut_off = False
        self._lock = threading.Lock()
        self.labels = dict(cfg.labels)
        self._pool = pool or ThreadPoolExecutor(cfg.workers, thread_name_prefix="step")

    def _trusted_cache(self) -> model.DesiredState | None:
        """The cached desired state, if the server answered recently enough that it
        cannot have evacuated this host's instances meanwhile (CACHE_TRUSTED_FOR)."""
        cached = self.store.load_desired()
        heard = self._heard
        if cached is None or (
            heard is not None and self._wall() - heard <= self.cfg.cache_trusted_for
        ):
            return cached
        log.warning(
            "the server last answered %s; its cached desired state may name instances "
            "evacuated meanwhile: nothing is started or removed until it answers",
            "never" if heard is None else f"{self._wall() - heard:.0f}s ago",
        )
        return None

    # --- lifecycle

    def run(self) -> None:
        state, message = self.plumber.bridge_netfilter(self.cfg.bridge_nf)
        # the sysctl is left as found; the label says what bridged traffic meets
        log.log(logging.WARNING if state == "on" else logging.INFO, "%s", message)
        self.labels = {**self.cfg.labels, "dockyard.bridge-nf": state}
        self.wake.set()  # reconcile from the local cache before the server answers
        loops = (
            self._register_then_poll,
            self._heartbeat_loop,
            self._events_loop,
            self._monitor_loop,
            self._metrics_loop,
        )
        for target in loops:
            supervised = threading.Thread(
                target=self._supervised, args=(target,), daemon=True, name=target.__name__
            )
            supervised.start()
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
        self.health.stop()
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
                agent_version=__version__,
                labels={**self.labels, "dockyard.storage": info.storage, **self._metrics_label()},
                reserved_cores=self.cfg.reserved_cores,
                reserved_memory_mb=self.cfg.reserved_memory_mb,
                cpu_allocation_ratio=self.cfg.cpu_allocation_ratio,
                ram_allocation_ratio=self.cfg.ram_allocation_ratio,
                root_disk_quota=info.root_disk_quota,
                networks=self.cfg.networks,
            )
        )
        log.info("registered host %s (%d cores, %d MB)", self.cfg.host, info.cores, info.memory_mb)
        try:
            self.heartbeat()  # its baseline now, not 10 s later
        except DockyardError as exc:
            log.warning("could not report the host's baseline: %s", exc.detail)

    def status(self) -> model.HostStatus:
        """The heartbeat's body: the host's baseline and its instances' drift."""
        desired, _ = self.snapshot()
        wanted = list((desired or {}).values())
        baseline = host_baseline(self.driver, self.plumber, self.survey, wanted, self.labels)
        return model.HostStatus(baseline=baseline, instance_drift=self.drift.report())

    def heartbeat(self) -> None:
        """Alive, with the host's status. A status the server refuses (422: an item it
        finds malformed) must not make the host look down: it beats without one."""
        status = self._survey()
        try:
            beat = self.client.heartbeat(status)
        except PermanentError as exc:
            if exc.extra.get("status") != 422:
                raise
            log.warning("the server refused this host's baseline: %s", exc.detail)
            beat = self.client.heartbeat()
        self.beat_every = beat.beat_every  # the server's pace: see model.Beat
        self._heard_from_server()

    def _survey(self) -> model.HostStatus | None:
        """The heartbeat's status; None, to beat without it, when the survey fails (a
        bug must not silence the beat) or has not finished within SURVEY_WAIT: a host
        that stops beating is called down and may be evacuated while its containers
        still run. A survey still running from an earlier beat is not started again."""
        if self._surveying is None or self._surveying.done():
            self._surveying = self._survey_pool.submit(self.status)
        try:
            return self._surveying.result(timeout=SURVEY_WAIT)
        except FutureTimeout:
            log.warning("the host's survey took over %g s (is dockerd answering?); "
                        "beating without its status", SURVEY_WAIT)  # fmt: skip
        except Exception:
            log.exception("could not survey this host; beating without its status")
        return None

    # --- background loops

    def _metrics_label(self) -> dict[str, str]:
        return {"dockyard.metrics": self.metrics.url} if self.metrics else {}

    def _register_then_poll(self) -> None:
        self._retry_forever(self.register)
        self._refresh_scrape_tokens()
        while not self.stop_event.is_set():
            try:
                state = self.client.desired(since=self.generation, wait=25)
            except DockyardError as exc:
                log.warning("long poll failed: %s", exc.detail)
                self.stop_event.wait(1)
                continue
            self.receive(state)

    def receive(self, state: model.DesiredState) -> None:
        """Take the server's desired state: cached on disk, the next pass works on it."""
        self._heard = heard = self._wall()
        if state.generation != self.generation:
            self.store.save_desired(state)
            with self._lock:
                self.desired = {i.id: i for i in state.instances}
                self.generation = state.generation
                self.host_volumes = _volume_ids(state)
            self.wake.set()
        self.store.heard_from_server(heard)  # after the wake: not on the way to the pass

    def _heartbeat_loop(self) -> None:
        while not self.stop_event.wait(self.beat_every):
            try:
                self.heartbeat()
                self._refresh_scrape_tokens()
            except PermanentError as exc:
                if exc.extra.get("status") == 404:
                    self._retry_forever(self.register)
            except DockyardError as exc:
                log.warning("heartbeat failed: %s", exc.detail)
            except Exception:  # the thread must outlive any bug: a silent host is evacuated
                log.exception("heartbeat failed")

    def _events_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                for ev in self.driver.events(self.stop_event):
                    # a start its step made: the step's end wakes a pass; a death wakes one
                    # now (health checks of the dead container stop, even mid-reboot)
                    with self._lock:
                        own_start = ev.action == "start" and ev.instance_id in self._busy
                    if not own_start:
                        self.wake.set()  # the empty event after (re)subscribing too
            except TemporaryError as exc:
                log.info("container events: %s; reconnecting", exc.detail)
                self.wake.set()
                self.stop_event.wait(1)

    def _monitor_loop(self) -> None:
        self.monitor.run(self.stop_event, self.running, self.after_monitor_round)

    def after_monitor_round(self, pairs: list[tuple[model.DesiredInstance, Observed]]) -> None:
        """Every DRIFT_ROUNDS rounds, check the instances no step is working on."""
        self._rounds += 1
        if self._rounds % DRIFT_ROUNDS:
            return
        with self._lock:
            idle = [(want, obs) for want, obs in pairs if want.id not in self._busy]
        self.drift.check(idle)

    def _metrics_loop(self) -> None:
        """Sample what /metrics serves on a timer of its own: a scrape reads no file."""
        if self.metrics is None:
            return
        while not self.stop_event.is_set():
            desired, _ = self.snapshot()
            try:
                self.metrics.sampler.sample(desired, list(self._observed))
            except Exception:
                log.exception("sampling the metrics failed; trying again")
            self.stop_event.wait(SAMPLE_SECONDS)

    def _refresh_scrape_tokens(self) -> None:
        if self.metrics is None:
            return
        try:
            self.metrics.set_hashes(self.client.monitoring())
        except DockyardError as exc:
            log.info("could not ask for the scrape tokens: %s", exc.detail)
        except OSError as exc:
            log.warning("could not keep the scrape tokens: %s", exc)

    def drift_samples(self) -> list[Sample]:
        """dockyard_instance_drift's series: the drift the last checks confirmed."""
        desired, _ = self.snapshot()
        projects = {i.id: i.project for i in (desired or {}).values()}
        host, az = self.cfg.host, self.cfg.availability_zone
        return instance_drift_samples(host, az, self.drift.report() or [], projects)

    def health_samples(self) -> list[Sample]:
        """dockyard_instance_healthy: 1 healthy, 0 starting or unhealthy (status label)."""
        desired, _ = self.snapshot()
        host, az = self.cfg.host, self.cfg.availability_zone
        out = []
        for iid, status in self.health.statuses().items():
            want = (desired or {}).get(iid)
            if want is None:
                continue
            labels = {"instance_id": iid, "name": want.name, "project": want.project,
                      "host": host, "az": az, "status": status}  # fmt: skip
            out.append(Sample(HEALTH_METRIC, labels, 1.0 if status == "healthy" else 0.0))
        return out

    def running(self) -> list[tuple[model.DesiredInstance, Observed]]:
        """Instances wanted here whose containers the last reconcile pass saw running:
        passes run on every death, every start but one a step made (its end wakes a
        pass) and every 10 s, so this is current without asking dockerd every second."""
        desired, _ = self.snapshot()
        pairs = [((desired or {}).get(obs.instance_id), obs) for obs in self._observed]
        return [(want, obs) for want, obs in pairs if want is not None and obs.running]

    def _supervised(self, loop: Callable[[], None]) -> None:
        """Run ``loop`` until the agent stops. An error it did not expect is logged and the
        loop runs again a second later: a loop's thread that died would leave the agent up
        but deaf (no desired state, no heartbeats) with one line in its log."""
        while not self.stop_event.is_set():
            try:
                loop()
                return
            except Exception:
                log.exception("%s failed; it starts again in 1 s", loop.__name__)
                self.stop_event.wait(1)

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
        with self._lock:
            listed = self._ended  # the steps ended before this listing of dockerd
            self._ended_at = {iid: n for iid, n in self._ended_at.items() if n > listed}
        observed = {o.instance_id: o for o in self.driver.list()}
        self._observed = list(observed.values())
        self.health.sync(_health_targets(desired, observed))
        links = self.plumber.links()
        p = plan(desired, observed, self.store.records(), links, self.store.known_ids())
        now = self._clock()
        cut_off = self._cut_off()
        for iid, step in p.steps.items():
            # done and reported at this generation: wait for the server's next word
            if self._settled.get(iid) == generation or (cut_off and step in _STARTS):
                continue
            assert desired is not None
            if step == Step.report and self.worker.reported(desired[iid], observed.get(iid)):
                continue  # said already; the server's answer is on its way
            if self._claim(iid, now, listed):
                self._pool.submit(self._run_step, iid, step, desired[iid], generation)
        for iid in p.orphans:
            if self._claim(iid, now, listed):
                self._pool.submit(self._run_orphan, iid)
        for name in p.stale_links:
            self.plumber.remove_stale(name)
        if now - self._guarded_at >= GUARD_SECONDS:  # a busy host runs passes back to back
            self._guarded_at = now
            self._guard_ports(desired)
            self._sync_bridges()
        if not p.orphans:  # an orphan container may still hold a volume: it goes first
            self.worker.sweep_volumes(desired, self.host_volumes)

    def _report_health(self, iid: str, health: model.Health) -> None:
        """A health check's status changed: the server hears it now, not at the next
        step (on the health checker's reporting thread)."""
        obs = self.driver.inspect(iid)
        rebuilt = obs.rebuild_seq if obs is not None else None
        running = obs is not None and obs.running  # stopped meanwhile: no health to show
        rep = model.InstanceReport(
            power_state=power_of(obs), health=health if running else None, rebuilt_seq=rebuilt
        )
        self.worker.tell(iid, rep)

    def _heard_from_server(self) -> None:
        """The server answered: remembered here, and on disk for the next start."""
        self._heard = self._wall()
        self.store.heard_from_server(self._heard)

    def _cut_off(self) -> bool:
        """The server has not answered for longer than it waits before calling this host
        down: it may have evacuated this host's instances meanwhile, so nothing is
        started until it answers again (what runs keeps running)."""
        heard = self._heard
        cut_off = heard is not None and self._wall() - heard > self.cfg.cache_trusted_for
        if cut_off and not self._was_cut_off:
            log.warning(
                "no answer from the server for %.0fs: starting nothing until it answers "
                "(it may have evacuated this host)",
                self._wall() - (heard or 0.0),
            )
        self._was_cut_off = cut_off
        return cut_off

    def _guard_ports(self, desired: dict[str, model.DesiredInstance] | None) -> None:
        """Put back the anti-spoofing rules of running instances that lost them (an
        `nft flush ruleset`, an upgrade from an agent without rules): such a port is
        open to spoofing until the next pass, not until the instance restarts. An
        instance with a step claimed (queued or running) is left to that step."""
        with self._lock:
            idle = {
                iid
                for iid, want in (desired or {}).items()
                if want.power == "running" and iid not in self._busy
            }
        if not idle or desired is None:
            return
        try:
            for iid in self.plumber.unguarded(idle):
                log.warning("%s had no anti-spoofing rules on its port; restoring them", iid)
                self.plumber.guard(iid, desired[iid].net)
        except DockyardError as exc:
            log.warning("could not restore anti-spoofing rules: %s", exc.detail)

    def _sync_bridges(self) -> None:
        """Bridges with ports let their own traffic through iptables, for when
        br_netfilter was loaded (or its rule deleted) after their ports were plumbed: a
        plumb adds the rule itself. With br_netfilter on this is an nft listing and two
        iptables processes per bridge, so at most once per GUARD_SECONDS (in a burst of
        creates passes run back to back: it was a sixth of the agent's CPU)."""
        try:
            self.plumber.sync_bridges()
        except DockyardError as exc:
            log.warning("could not let bridged traffic through iptables: %s", exc.detail)

    def _claim(self, iid: str, now: float, listed: int) -> bool:
        """Take ``iid`` for a step, unless one runs, it backs off, or its last step ended
        after this pass listed dockerd: planned from that listing, a spawn just done
        would be done again (a second container create, the veth replaced under a
        running instance: seen in bursts of creates). The step's end wakes a new pass."""
        with self._lock:
            if iid in self._busy or self._not_before.get(iid, 0) > now:
                return False
            if self._ended_at.get(iid, 0) > listed:
                return False
            self._busy.add(iid)
            return True

    def _run_step(self, iid: str, step: Step, want: model.DesiredInstance, gen: int) -> None:
        started = self._clock()
        try:
            done = self.worker.run(step, want)
            log.info("%s %s %s in %.3fs", step.value, want.name, "done" if done else "failed",
                     self._clock() - started)  # fmt: skip
            self._failures.pop(iid, None)
            # a permanent failure is reported once per generation, not every pass
            if not done or step in _SETTLING or want.task_state is not None:
                self._settled[iid] = gen
        except TemporaryError as exc:
            self._backoff(iid, step, want, exc, gen)
        except Exception:
            log.exception("%s of %s crashed", step.value, want.name)
            self._backoff(
                iid, step, want, TemporaryError("unexpected agent error; see its log"), gen
            )
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
        self, iid: str, step: Step, want: model.DesiredInstance, exc: DockyardError, gen: int
    ) -> None:
        n = self._failures.get(iid, 0) + 1
        self._failures[iid] = n
        log.warning("%s of %s failed (%d): %s", step.value, want.name, n, exc.detail)
        # given up and reported as the task's end, not retried for ever: a spawn, a
        # snapshot, and any step of a rebuild (its files refused after the old container
        # went: a start of the new one)
        rebuilding = step == Step.rebuild or want.task_state == model.TaskState.rebuilding
        if n >= MAX_TEMPORARY_FAILURES and (step in (Step.spawn, Step.snapshot) or rebuilding):
            self._failures.pop(iid, None)
            self._settled[iid] = gen  # until the server's next word
            try:
                self.worker.run_failed(step, want, f"gave up after {n} tries: {exc.detail}")
            except DockyardError as again:
                log.warning("could not report the failure of %s: %s", want.name, again.detail)
            return
        self._not_before[iid] = self._clock() + min(0.5 * 2**n, 10)

    def _done(self, iid: str) -> None:
        with self._lock:
            self._busy.discard(iid)
            self._ended += 1
            self._ended_at[iid] = self._ended
        self.wake.set()


def _health_targets(
    desired: dict[str, model.DesiredInstance] | None, observed: dict[str, Observed]
) -> list[Target]:
    """The running instances that have a health check."""
    out = []
    for iid, want in (desired or {}).items():
        obs = observed.get(iid)
        if want.health_check is None or want.power != "running" or obs is None:
            continue
        rebuilding = want.task_state == model.TaskState.rebuilding
        # not the old one while a rebuild lasts; after a failed one, the one that runs on
        if obs.running and health_counts(obs.rebuild_seq, want.rebuild_seq, rebuilding):
            out.append(Target(iid, want.health_check, want.net.ip, obs.pid, obs.started_at))
    return out


def _unpack(
    state: model.DesiredState | None,
) -> tuple[dict[str, model.DesiredInstance] | None, int, list[str] | None]:
    """Desired instances by id, the generation, the server's list of this host's volumes."""
    if state is None:
        return None, -1, None
    return {i.id: i for i in state.instances}, state.generation, _volume_ids(state)


def _volume_ids(state: model.DesiredState | None) -> list[str] | None:
    """None when unknown (no state, or a server that does not list volumes)."""
    if state is None or state.volumes is None:
        return None
    return [v.id for v in state.volumes]
