"""Instances' health checks, each on its own clock, all in one asyncio loop.

    agent's reconcile pass ── sync(targets) ──► HealthChecker (thread "health", one loop)
                                                  one asyncio task per instance:
                                                  probe ─► HealthState.record ─► changed?
                                                                                    │
    server ◄── InstanceReport(health) ◄── on_change (thread "health-report") ◄──────┘
                                         the latest unsent per instance, at most one
                                         per DAMP_SECONDS (a start's first at once)

A probe is a coroutine (compute/probes.py: http and tcp over a socket opened in the
instance's network namespace, cmd through the driver's exec in a small pool), so 200
instances cost 200 tasks, not 200 threads. HealthState is the pure part: starting ->
healthy on a success; -> unhealthy after ``unhealthy_after`` consecutive failures, where
failures in the ``start_period_s`` after a start do not count, nor checks the agent
could not run (a probe answers None: its exec threads all busy, the instance's last
check still running). A cmd check runs at most every CMD_MIN_INTERVAL (5 s) whatever
its interval_s says: each one is a process in the instance. A new container start
(restart, rebuild) or a changed check starts again from "starting".
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from dockyard.model import Health, HealthCheck

log = logging.getLogger(__name__)
HEALTH_METRIC = "dockyard_instance_healthy"
CMD_MIN_INTERVAL = 5.0  # seconds: the shortest interval of a cmd check, whatever it says
DAMP_SECONDS = 2.0  # an instance's health is reported at most this often (but a start's first)
HEALTH_HELP = "1 when the instance's health check passes, 0 while starting or unhealthy"


@dataclass(frozen=True)
class Target:
    """One running instance to check: where, and which container start it is."""

    instance_id: str
    check: HealthCheck
    ip: str
    pid: int  # its PID 1 on the host: the network namespace probes connect from
    started_at: str

    @property
    def key(self) -> str:
        """Changes when the state must start over: another start, another check."""
        return f"{self.started_at}|{self.pid}|{self.check.model_dump_json()}"


@dataclass
class HealthState:
    """The health of one container start; ``record`` returns the new Health when its
    status changes (what is reported), else None."""

    check: HealthCheck
    since: float  # when this start was first seen (the start period counts from it)
    status: str = "starting"
    failures: int = 0
    detail: str = ""

    def record(self, ok: bool, detail: str, now: float) -> Health | None:
        before = self.status
        if ok:
            self.status, self.failures, self.detail = "healthy", 0, ""
        else:
            self.detail = detail[:512]
            in_start_period = now - self.since < self.check.start_period_s
            if not (in_start_period and self.status == "starting"):
                self.failures += 1
                if self.failures >= self.check.unhealthy_after:
                    self.status = "unhealthy"
        return self.health() if self.status != before else None

    def health(self) -> Health:
        return Health.model_validate(
            {"status": self.status, "failures": self.failures, "detail": self.detail}
        )


class Prober(Protocol):
    async def probe(self, target: Target) -> tuple[bool | None, str]:
        """Run the check once (within its timeout): (passed, why not); None when the
        agent could not run it (overloaded, the last one still running): not counted."""
        ...

    def release(self, target: Target) -> None:
        """The target's container start is no longer checked: what was kept for it goes."""
        ...


def interval_of(check: HealthCheck) -> float:
    """A cmd check runs a process in the instance: at most every CMD_MIN_INTERVAL."""
    if check.kind == "cmd":
        return max(check.interval_s, CMD_MIN_INTERVAL)
    return check.interval_s


def deadline_of(check: HealthCheck) -> float:
    """How long a probe may take: a cmd may wait its timeout for an exec thread first."""
    return check.timeout_s * (2 if check.kind == "cmd" else 1) + 1


@dataclass
class _Watch:
    target: Target
    state: HealthState
    task: asyncio.Task[None] | None = None
    told: bool = False  # a healthy/unhealthy of this start reported (the next are damped)


@dataclass
class HealthChecker:
    """``sync`` from any thread; ``on_change(instance id, health)`` runs on a thread of
    its own (it may block on the server). The loop starts with the first ``sync``."""

    prober: Prober
    on_change: Callable[[str, Health], None]
    _watches: dict[str, _Watch] = field(default_factory=dict)
    _unsent: set[str] = field(default_factory=set)  # their last report failed
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    # the latest unsent health per instance (a newer one replaces it: no queue grows),
    # and whether it goes at once (the first of a start) or waits out DAMP_SECONDS
    _pending: dict[str, tuple[Health, bool]] = field(default_factory=dict)
    _sent_at: dict[str, float] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _reporter: threading.Thread | None = None
    _stopping: bool = False

    def health(self, instance_id: str, started_at: str | None = None) -> Health | None:
        """As last seen; None when the instance has no check or does not run here. With
        ``started_at``: of that container start only; another one (a rebuild's new
        container, before the next sync) is "starting"."""
        with self._lock:
            watch = self._watches.get(instance_id)
            if watch is None:
                return None
            if started_at is not None and watch.target.started_at != started_at:
                return HealthState(watch.target.check, since=0.0).health()
            return watch.state.health()

    def statuses(self) -> dict[str, str]:
        with self._lock:
            return {iid: w.state.status for iid, w in self._watches.items()}

    def sync(self, targets: list[Target]) -> None:
        """Check exactly these from now on: new ones start, gone ones stop, a target
        whose key changed starts over from "starting" (and says so)."""
        if self._loop is None:
            if not targets:
                return
            self._start_loop()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._apply, {t.instance_id: t for t in targets})
        with self._lock:  # a report that failed (server away): sent again now
            unsent = [(iid, w.state.health()) for iid, w in self._watches.items()
                      if iid in self._unsent]  # fmt: skip
            self._unsent.clear()
        for iid, health in unsent:
            self._changed(iid, health, urgent=True)

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._cancel_all(), loop).result(timeout=5)
            except Exception as exc:  # stopping anyway
                log.warning("health checks did not end cleanly: %s", exc)
            loop.call_soon_threadsafe(loop.stop)
        with self._cond:
            self._stopping = True
            self._pending.clear()
            self._cond.notify_all()

    async def _cancel_all(self) -> None:
        self._apply({})
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        threading.Thread(target=self._run_loop, args=(loop,), daemon=True, name="health").start()
        self._reporter = threading.Thread(target=self._report_loop, daemon=True,
                                          name="health-report")  # fmt: skip
        self._reporter.start()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _apply(self, targets: dict[str, Target]) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            for iid in set(self._watches) - set(targets):
                self._drop(iid)
            for iid, target in targets.items():
                old = self._watches.get(iid)
                if old is not None and old.target.key == target.key:
                    old.target = target
                    continue
                if old is not None:
                    self._drop(iid)
                watch = _Watch(target, HealthState(target.check, since=loop.time()))
                watch.task = loop.create_task(self._run(watch), name=f"health-{iid}")
                self._watches[iid] = watch
                if old is not None and old.state.status != "starting":  # a restart
                    self._changed(iid, watch.state.health(), urgent=True)

    def _drop(self, iid: str) -> None:
        watch = self._watches.pop(iid)
        if watch.task is not None:
            watch.task.cancel()
        self.prober.release(watch.target)
        with self._cond:
            self._sent_at.pop(iid, None)

    async def _run(self, watch: _Watch) -> None:
        loop = asyncio.get_running_loop()
        check = watch.target.check
        while True:
            try:
                ok, detail = await asyncio.wait_for(
                    self.prober.probe(watch.target), deadline_of(check)
                )
            except TimeoutError:
                ok, detail = False, f"no answer within {check.timeout_s:g}s"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a prober's bug must not end the instance's checks
                log.exception("health check of %s crashed", watch.target.instance_id)
                ok, detail = False, f"the check could not run: {exc}"
            changed = None
            if ok is None:  # the agent's own trouble, not the instance's
                log.info("health check of %s not run: %s", watch.target.instance_id, detail)
            else:
                with self._lock:
                    changed = watch.state.record(ok, detail, loop.time())
            if changed is not None:
                self._changed(watch.target.instance_id, changed, urgent=not watch.told)
                watch.told = True
            await asyncio.sleep(interval_of(check))

    def _changed(self, iid: str, health: Health, urgent: bool = False) -> None:
        """Keep ``health`` as the one to report (replacing an unsent one)."""
        log.info("%s is %s%s", iid, health.status, f": {health.detail}" if health.detail else "")
        with self._cond:
            if self._stopping:
                return
            before = self._pending.get(iid)
            self._pending[iid] = (health, urgent or (before is not None and before[1]))
            self._cond.notify()

    def _next_report(self) -> tuple[str, Health] | None:
        """The next health due (None: stopping); waits until one is. A flapping check
        is reported at most once per DAMP_SECONDS, its latest status."""
        with self._cond:
            while not self._stopping:
                now, wait = time.monotonic(), None
                for iid, (health, urgent) in self._pending.items():
                    left = self._sent_at.get(iid, -DAMP_SECONDS) + DAMP_SECONDS - now
                    if urgent or left <= 0:
                        del self._pending[iid]
                        self._sent_at[iid] = now
                        return iid, health
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def _report_loop(self) -> None:
        while (item := self._next_report()) is not None:
            self._tell(*item)

    def _tell(self, iid: str, health: Health) -> None:
        with self._lock:
            if iid not in self._watches:
                return  # no longer checked here (deleted, stopped, moved)
        try:
            self.on_change(iid, health)
        except Exception as exc:  # the next sync sends it again
            with self._lock:  # kept before it is said: a sync that follows the word resends
                self._unsent.add(iid)
            log.warning("could not report the health of %s: %s; will retry", iid, exc)
