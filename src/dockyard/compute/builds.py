"""The build runner of a build host (``dockyard-agent --builds``): carries out the
build orders the server hands this host, one at a time, each once per id.

    Builder.run: long-poll GET /agent/hosts/NAME/builds ──► orders
      a new order (none running) ─► its own thread, _Build.run:
        marker        STATE/builds/ID.started (an agent restarted now reports
                      "the agent restarted during the build", never resumes it)
        POST .../start
        clone         compute/clone.py: git into STATE/builds/work/ID-*, the order's
                      commit checked out and verified (removed after, always)
        memory        an order asking more than the host keeps (--reserved-memory-mb)
                      fails here, before anything runs
        build         driver.build: dockerd's classic builder on the host's reserved
                      cores, the order's memory (no swap), no network, under the
                      builds' cgroup parent (pids.max); the output to the log
        push          driver.push(PUSH_REPO:YYYYMMDD-<sha7>, login, halt) -> digest; the
                      local tag removed after (its layers kept: the next build's cache)
        report        POST .../done (BuildDone) or .../failure (BuildFailure with the
                      log's last lines); kept in STATE/builds/ID.report.json until the
                      server took it, resent before each poll
      the log         POST .../log?offset=N (text/plain) about every 0.5 s with what
                      came since; a failed send is sent again from the same offset; lines
                      cut at BUILD_LINE_MAX, at most BUILD_LOG_MAX bytes held
      an order gone from the poll (cancelled, timed out on the server): the build is
      stopped at once (git killed, the build's or the push's stream shut: dockerd
      kills the step, the registry gets no manifest) and nothing more is reported.
      Its time up (timeout_seconds from its start): stopped the same way, reported
      "timed out after N s".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from dockyard.compute.clone import Cloner, GitCloner, Stopped, dockerfile_in, shown
from dockyard.compute.driver import (
    BUILD_CGROUP,
    BUILD_LINE_MAX,
    BUILD_PIDS_MAX,
    BuildSpec,
    ComputeDriver,
)
from dockyard.errors import DockyardError, PermanentError, TemporaryError
from dockyard.model.builds import (
    BUILD_LOG_MAX,
    BuildDone,
    BuildFailure,
    BuildOrder,
    BuildOrders,
)
from dockyard.model.registry import RegistryLogin

log = logging.getLogger("dockyard.builds")
FLUSH_SECONDS = 0.5  # the log goes to the server this often
SEND_MAX = 256 << 10  # bytes of log in one POST
TAIL_MAX = 3 << 10  # bytes of the log's tail a failure carries (its error is <= 4 KiB)
RESTARTED = "the agent restarted during the build"
_FINISHED_KEPT = 500


class BuildServer(Protocol):
    """The server's build endpoints for an agent (compute/client.py). Unreachable or
    5xx: TemporaryError; refused (the build gone, finished): PermanentError."""

    def builds(self, since: int, wait: float) -> BuildOrders:
        """Long poll: this host's build orders once their generation differs."""
        ...

    def start_build(self, build_id: str) -> None: ...

    def build_log(self, build_id: str, offset: int, text: bytes) -> None:
        """``text`` is the log from byte ``offset`` on; sent again from the same offset
        after a failure, the server keeps each byte once."""
        ...

    def build_done(self, build_id: str, done: BuildDone) -> None: ...

    def build_failed(self, build_id: str, failure: BuildFailure) -> None: ...


class Sizer(Protocol):
    def stored_size(self, pull: str, login: RegistryLogin | None) -> int:
        """Bytes the registry stores for ``HOST:PORT/REPO@sha256:...``."""
        ...


class Halt:
    """A build's stop: the first reason given wins."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def __call__(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


class LogPipe:
    """The build's log on its way to the server: lines are buffered and sent every
    FLUSH_SECONDS from where the server's copy ends; the last lines kept for a
    failure's message. The server refusing the log (the build gone there) halts it."""

    def __init__(self, server: BuildServer, build_id: str, halt: Halt) -> None:
        self.server, self.build_id, self.halt = server, build_id, halt
        self.sent = 0  # bytes the server has
        self.pending = bytearray()
        self.tail: deque[str] = deque()
        self._tail_bytes = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="build-log")
        self._thread.start()

    def __call__(self, line: str) -> None:
        """One line (cut at BUILD_LINE_MAX); what goes past BUILD_LOG_MAX bytes in all
        is dropped here, as the server would (nothing held grows with the output)."""
        line = line[:BUILD_LINE_MAX]
        data = (line + "\n").encode("utf-8", "replace")
        kept = line[:TAIL_MAX]
        with self._lock:
            room = BUILD_LOG_MAX - self.sent - len(self.pending)
            if room > 0:  # whole characters only: a cut one is dropped
                self.pending += data[:room].decode("utf-8", "ignore").encode()
            self.tail.append(kept)
            self._tail_bytes += len(kept.encode("utf-8", "replace")) + 1
            while self._tail_bytes > TAIL_MAX and len(self.tail) > 1:
                self._tail_bytes -= len(self.tail.popleft().encode("utf-8", "replace")) + 1

    def last_lines(self) -> str:
        with self._lock:
            text = "\n".join(self.tail)
        return text.encode("utf-8", "replace")[-TAIL_MAX:].decode("utf-8", "ignore")

    def close(self, patience: float = 10.0) -> None:
        """Stop the sender, then send what is left (retried for ``patience`` s)."""
        self._closed.set()
        self._thread.join()
        deadline = time.monotonic() + patience
        while self.pending and not self.flush() and time.monotonic() < deadline:
            time.sleep(FLUSH_SECONDS)

    def flush(self) -> bool:
        """Send what is pending; False when it must be sent again."""
        with self._lock:
            chunk = bytes(self.pending[:SEND_MAX])
        if not chunk:
            return True
        if len(chunk) == SEND_MAX and b"\n" in chunk:
            chunk = chunk[: chunk.rindex(b"\n") + 1]  # whole lines (whole characters)
        try:
            self.server.build_log(self.build_id, self.sent, chunk)
        except TemporaryError as exc:
            log.info("build %s: log not sent (%s); again from %d", self.build_id, exc, self.sent)
            return False
        except DockyardError as exc:
            log.info("build %s: the server refused its log (%s): stopping", self.build_id, exc)
            self.halt("the server no longer takes its log")
            with self._lock:
                self.pending.clear()
            return True
        with self._lock:
            del self.pending[: len(chunk)]
            self.sent += len(chunk)
        return not self.pending

    def _loop(self) -> None:
        while not self._closed.wait(FLUSH_SECONDS):
            self.flush()


class BuildBook:
    """What the builder must not forget across its restarts, under STATE/builds: the
    build it was carrying out (ID.started: never resumed, reported failed), the
    reports the server has not taken yet (ID.report.json), the ids finished."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.root.mkdir(parents=True, exist_ok=True)
        self._finished_file = root / "finished.json"
        self._lock = threading.Lock()
        try:
            self.finished: list[str] = list(json.loads(self._finished_file.read_text()))
        except (OSError, ValueError):
            self.finished = []

    def started(self, build_id: str, **facts: str) -> None:
        _write(self.root / f"{build_id}.started", json.dumps(facts))

    def interrupted(self) -> dict[str, dict[str, str]]:
        out = {}
        for marker in self.root.glob("*.started"):
            try:
                out[marker.name.removesuffix(".started")] = dict(json.loads(marker.read_text()))
            except (OSError, ValueError):
                out[marker.name.removesuffix(".started")] = {}
        return out

    def forget_start(self, build_id: str) -> None:
        (self.root / f"{build_id}.started").unlink(missing_ok=True)

    def save_report(self, build_id: str, report: BuildDone | BuildFailure) -> None:
        kind = "done" if isinstance(report, BuildDone) else "failure"
        _write(
            self.root / f"{build_id}.report.json",
            json.dumps({"kind": kind, "body": report.model_dump(mode="json")}),
        )
        self.forget_start(build_id)

    def reports(self) -> dict[str, BuildDone | BuildFailure]:
        out: dict[str, BuildDone | BuildFailure] = {}
        for path in sorted(self.root.glob("*.report.json")):
            try:
                saved = json.loads(path.read_text())
                kind = BuildDone if saved["kind"] == "done" else BuildFailure
                out[path.name.removesuffix(".report.json")] = kind.model_validate(saved["body"])
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)
        return out

    def has_report(self, build_id: str) -> bool:
        return (self.root / f"{build_id}.report.json").exists()

    def finish(self, build_id: str) -> None:
        """The build is over for this host: its report taken (or refused: gone)."""
        (self.root / f"{build_id}.report.json").unlink(missing_ok=True)
        self.forget_start(build_id)
        with self._lock:
            if build_id not in self.finished:
                self.finished = [*self.finished, build_id][-_FINISHED_KEPT:]
                _write(self._finished_file, json.dumps(self.finished))


def _write(path: Path, text: str) -> None:
    """Whole or not at all, through a temporary file of this write's own (two threads
    writing one file never rename each other's)."""
    fd, part = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with open(fd, "w") as f:
            f.write(text)
        os.replace(part, path)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise


class Builder:
    """Carries out this host's build orders on ``cores`` (its reserved cores), each
    within ``memory_mb`` (its reserved memory: an order asking more fails), its steps
    under the cgroup parent ``cgroup`` of at most ``pids_max`` tasks."""

    def __init__(
        self,
        server: BuildServer,
        driver: ComputeDriver,
        state_dir: Path,
        cores: list[int],
        *,
        memory_mb: int,
        cloner: Cloner | None = None,
        sizer: Sizer | None = None,
        clock: Callable[[], float] = time.monotonic,
        cgroup: str = BUILD_CGROUP,
        pids_max: int = BUILD_PIDS_MAX,
        network: str = "none",
    ) -> None:
        if not cores:
            raise PermanentError("builds run on the host's reserved cores: give --reserved-cores")
        self.server, self.driver, self.cores = server, driver, list(cores)
        self.memory_mb, self.cgroup, self.pids_max = memory_mb, cgroup, pids_max
        self.network = network
        self.cloner: Cloner = cloner or GitCloner()
        self.sizer, self._clock = sizer, clock
        self.book = BuildBook(state_dir / "builds")
        self._lock = threading.Lock()
        self.retry_seconds = 2.0  # after a failed poll
        self._reporting = threading.Lock()  # the poll's thread and a build's both send
        self._running: tuple[str, Halt, threading.Thread] | None = None
        self._recover()

    def _recover(self) -> None:
        """A build the last run of the agent left half done is reported failed (its
        clone and its local tag removed), never resumed."""
        shutil.rmtree(self.book.work, ignore_errors=True)
        for build_id, facts in self.book.interrupted().items():
            log.warning("build %s was running when the agent stopped: failed", build_id)
            if facts.get("ref"):
                self._untag(facts["ref"])
            failure = BuildFailure(error=RESTARTED, commit=facts.get("commit"))
            self.book.save_report(build_id, failure)

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``; then the build running is stopped (reported failed at the
        agent's next start). An error it did not expect is logged and the loop goes on."""
        generation = -1
        while not stop.is_set():
            try:
                generation = self.poll_once(generation)
            except DockyardError as exc:  # refused (a server without builds): seldom
                log.warning("build orders: %s", exc.detail)
                stop.wait(self.retry_seconds * (1 if exc.retryable else 15))
            except Exception:
                log.exception("the build loop failed; it goes on in %g s", self.retry_seconds)
                stop.wait(self.retry_seconds)
        self.halt_running("the agent is stopping")
        self.join(30)

    def poll_once(self, generation: int) -> int:
        pending = self.send_reports()
        orders = self.server.builds(since=generation, wait=2 if pending else 25)
        self.follow(orders.orders)
        return orders.generation

    def follow(self, orders: list[BuildOrder]) -> None:
        """Stop the build running if its order is gone; else start the first new one."""
        with self._lock:
            running = self._running
            if running is not None and running[2].is_alive():
                if running[0] not in {o.id for o in orders}:
                    log.info("build %s: its order is gone (cancelled or timed out)", running[0])
                    running[1]("cancelled")
                return
            for order in orders:
                if order.id in self.book.finished or self.book.has_report(order.id):
                    continue
                halt = Halt()
                thread = threading.Thread(
                    target=self.carry_out, args=(order, halt), daemon=True, name="build"
                )
                self._running = (order.id, halt, thread)
                thread.start()
                return

    def halt_running(self, reason: str) -> None:
        with self._lock:
            if self._running is not None:
                self._running[1](reason)

    def join(self, timeout: float) -> None:
        running = self._running
        if running is not None:
            running[2].join(timeout)

    def send_reports(self) -> bool:
        """Send the reports the server has not taken; True while some wait for it."""
        with self._reporting:
            return self._send_reports()

    def _send_reports(self) -> bool:
        pending = False
        for build_id, report in self.book.reports().items():
            try:
                if isinstance(report, BuildDone):
                    self.server.build_done(build_id, report)
                else:
                    self.server.build_failed(build_id, report)
            except TemporaryError as exc:
                log.info("build %s: report not sent (%s); will retry", build_id, exc.detail)
                pending = True
                continue
            except DockyardError as exc:
                log.warning("build %s: the server refused its report: %s", build_id, exc.detail)
            self.book.finish(build_id)
        return pending

    def carry_out(self, order: BuildOrder, halt: Halt) -> None:
        """The order, start to report (the thread of one build)."""
        self.book.started(order.id)
        try:
            self.server.start_build(order.id)
        except TemporaryError as exc:
            log.warning("build %s: could not start it (%s); next poll", order.id, exc.detail)
            self.book.forget_start(order.id)
            return
        except DockyardError as exc:
            log.warning("build %s: the server refused its start: %s", order.id, exc.detail)
            self.book.finish(order.id)
            return
        report = _Run(self, order, halt).outcome()
        if report is None:  # cancelled, or the agent stopping (its marker stays)
            if halt.reason != "the agent is stopping":
                self.book.finish(order.id)
            return
        if isinstance(report, BuildDone):
            log.info("build %s: pushed %s (%s)", order.id, report.tag, report.seconds)
        else:
            log.info("build %s failed: %s", order.id, report.error.partition("\n")[0])
        self.book.save_report(order.id, report)
        self.send_reports()

    def _untag(self, ref: str) -> None:
        """The local tag goes; its layers stay, the cache of the next build."""
        try:
            self.driver.remove_image(ref, prune=False)
        except DockyardError as exc:
            log.warning("could not remove the local image %s: %s", ref, exc.detail)


class _Run:
    """One build carried out: clone, build, push, and its outcome."""

    def __init__(self, builder: Builder, order: BuildOrder, halt: Halt) -> None:
        self.b, self.order, self.halt = builder, order, halt
        self.commit: str | None = None
        self.ref: str | None = None
        self.seconds: dict[str, float] = {}

    def outcome(self) -> BuildDone | BuildFailure | None:
        """BuildDone, BuildFailure, or None when it was stopped for a reason the
        server already knows (its order gone) or will learn (the agent stopping)."""
        order, halt = self.order, self.halt
        pipe = LogPipe(self.b.server, order.id, halt)
        timer = threading.Timer(order.timeout_seconds, halt, args=("timeout",))
        timer.start()
        try:
            return self._steps(pipe)
        except DockyardError as exc:
            return self._failure(exc.detail, pipe)
        except Exception as exc:  # a bug must still end the build, and say so
            log.exception("build %s crashed", order.id)
            return self._failure(f"the build runner failed: {exc!r}", pipe)
        finally:
            timer.cancel()
            if self.ref is not None:
                self.b._untag(self.ref)
            pipe.close()

    def _steps(self, pipe: LogPipe) -> BuildDone | None:
        order = self.order
        if order.memory_mb > self.b.memory_mb:
            raise PermanentError(
                f"the build asks for {order.memory_mb} MiB of memory; this build host "
                f"keeps {self.b.memory_mb} MiB from instances (its agent's "
                "--reserved-memory-mb): lower the server's --build-memory-mb or reserve more"
            )
        self.b.book.work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{order.id}-", dir=self.b.book.work) as tmp:
            src = Path(tmp) / "src"
            with self._timed("clone"):
                pipe(f"cloning {shown(order.repo)} ({order.commit or order.ref})")
                self.commit = self.b.cloner.clone(order, src, self.halt.event, pipe)
            tag = f"{order.tag_date}-{self.commit[:7]}"
            self.ref = f"{order.push_repo}:{tag}"
            self.b.book.started(order.id, commit=self.commit, ref=self.ref)
            spec = BuildSpec(src, dockerfile_in(src, order.dockerfile), self.ref,
                             self.b.cores, order.memory_mb, self.b.cgroup,
                             self.b.pids_max, self.b.network)  # fmt: skip
            with self._timed("build"):
                self.b.driver.build(spec, pipe, self.halt.event)
        self._check_halt()
        with self._timed("push"):
            pipe(f"pushing {self.ref}")
            digest = self.b.driver.push(self.ref, order.login, self.halt.event)
        pipe(f"pushed {self.ref} as {digest}")
        if self.halt.event.is_set() and self.halt.reason != "timeout":
            return None
        return BuildDone(commit=self.commit, tag=tag, digest=digest, size=self._size(digest),
                         seconds=self.seconds)  # fmt: skip

    def _check_halt(self) -> None:
        if self.halt.event.is_set():
            raise Stopped("the build was stopped")

    def _failure(self, what: str, pipe: LogPipe) -> BuildFailure | None:
        if self.halt.event.is_set():
            if self.halt.reason != "timeout":
                return None
            what = f"timed out after {self.order.timeout_seconds} s"
        pipe(f"failed: {what}")
        tail = pipe.last_lines()
        error = f"{what}\n\nthe log's last lines:\n{tail}" if tail else what
        if len(error) > 4096:
            error = what[:1024] + "\n\nthe log's last lines:\n" + tail[-(4096 - 1100) :]
        return BuildFailure(error=error[:4096], commit=self.commit)

    def _size(self, digest: str) -> int:
        """For the report only: a registry that will not say is no failure."""
        if self.b.sizer is None:
            return 0
        repository = self.order.push_repo
        try:
            return self.b.sizer.stored_size(f"{repository}@{digest}", self.order.login)
        except DockyardError as exc:
            log.info("could not learn the stored size of %s: %s", repository, exc.detail)
            return 0

    @contextlib.contextmanager
    def _timed(self, what: str) -> Iterator[None]:
        began = self.b._clock()
        try:
            yield
        finally:
            self.seconds[what] = round(self.b._clock() - began, 3)
