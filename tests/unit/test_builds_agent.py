"""The build runner (compute/builds.py) against a fake server, a fake cloner and the
fake driver: what the server (and so the user) sees of a build order."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dockyard.compute.builds import RESTARTED, Builder, Halt
from dockyard.compute.clone import CloneFailed, Stopped
from dockyard.compute.drivers.fake import FakeDriver
from dockyard.errors import PermanentError, TemporaryError
from dockyard.model.builds import BuildDone, BuildFailure, BuildOrder, BuildOrders
from tests.integration.cluster import wait_for

SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeBuildServer:
    def __init__(self) -> None:
        self.orders: list[BuildOrder] = []
        self.started: list[str] = []
        self.log: dict[str, bytearray] = {}
        self.log_calls: list[tuple[str, int, bytes]] = []
        self.done: dict[str, BuildDone] = {}
        self.failed: dict[str, BuildFailure] = {}
        self.log_faults = 0  # the next N log posts fail (server away)
        self.report_faults = 0
        self.poll_faults: list[Exception] = []  # raised by the next polls, in turn

    def builds(self, since: int, wait: float) -> BuildOrders:
        time.sleep(0.02)  # a long poll that answers at once would spin the loop
        if self.poll_faults:
            raise self.poll_faults.pop(0)
        return BuildOrders(generation=1, orders=list(self.orders))

    def start_build(self, build_id: str) -> None:
        self.started.append(build_id)

    def build_log(self, build_id: str, offset: int, text: bytes) -> None:
        self.log_calls.append((build_id, offset, text))
        if self.log_faults:
            self.log_faults -= 1
            raise TemporaryError("server unreachable")
        have = self.log.setdefault(build_id, bytearray())
        assert offset <= len(have), "a gap in the log"
        have[offset:] = text

    def build_done(self, build_id: str, done: BuildDone) -> None:
        self._fault()
        self.done[build_id] = done

    def build_failed(self, build_id: str, failure: BuildFailure) -> None:
        self._fault()
        self.failed[build_id] = failure

    def _fault(self) -> None:
        if self.report_faults:
            self.report_faults -= 1
            raise TemporaryError("server unreachable")

    def text(self, build_id: str) -> str:
        return self.log.get(build_id, bytearray()).decode()


class FakeCloner:
    def __init__(self) -> None:
        self.clones: list[Path] = []
        self.gate: threading.Event | None = None
        self.error: str | None = None

    def clone(self, order, dest: Path, halt: threading.Event, output) -> str:
        self.clones.append(dest)
        dest.mkdir(parents=True)
        (dest / "Dockerfile").write_text("FROM base\n")
        output("cloned")
        while self.gate is not None and not self.gate.is_set():
            if halt.wait(0.01):
                raise Stopped("the clone was stopped")
        if self.error:
            raise CloneFailed(self.error)
        return order.commit or SHA


def order(build_id: str = "b1", **kw) -> BuildOrder:
    base = dict(
        id=build_id,
        repo="git://git.example/app.git",
        ref="main",
        commit=SHA,
        dockerfile="Dockerfile",
        push_repo="127.0.0.1:5000/p/app",
        tag_date="20261126",
        memory_mb=256,
        timeout_seconds=600,
    )
    base.update(kw)
    return BuildOrder(**base)


@pytest.fixture
def rig(tmp_path):
    server, driver, cloner = FakeBuildServer(), FakeDriver(), FakeCloner()
    builder = Builder(server, driver, tmp_path, [1], cloner=cloner)
    return builder, server, driver, cloner


def _finished(builder: Builder) -> None:
    wait_for(lambda: builder._running is None or not builder._running[2].is_alive(), 10, "build")


def test_an_order_is_built_pushed_reported_and_carried_out_once(rig):
    builder, server, driver, cloner = rig
    server.orders = [order()]
    builder.follow(server.orders)
    _finished(builder)
    for _ in range(3):  # the server still lists it for a while: not built again
        builder.follow(server.orders)
        _finished(builder)
    ref = f"127.0.0.1:5000/p/app:20261126-{SHA[:7]}"
    assert server.started == ["b1"] and len(driver.builds) == 1
    spec = driver.builds[0]
    assert spec.ref == ref and spec.cpuset == [1] and spec.memory_mb == 256
    done = server.done["b1"]
    assert done.tag == f"20261126-{SHA[:7]}" and done.commit == SHA
    assert done.digest == driver.registry[ref]
    assert set(done.seconds) == {"clone", "build", "push"}
    assert ref not in driver.images  # the local tag removed after the push
    assert "Successfully built" in server.text("b1") and f"pushed {ref}" in server.text("b1")
    assert not cloner.clones[0].exists()  # the clone removed
    assert not list((builder.book.root / "work").iterdir())


def test_an_order_gone_from_the_poll_stops_its_build_and_nothing_is_pushed(rig):
    builder, server, driver, _ = rig
    driver.build_gate = threading.Event()  # the build runs until stopped
    builder.follow([order()])
    wait_for(lambda: driver.builds, 10, "the build to start")
    builder.follow([])  # cancelled on the server
    _finished(builder)
    assert not driver.registry and not server.done and not server.failed
    builder.follow([order(build_id="b2")])  # the host is free for the next one
    driver.build_gate.set()
    _finished(builder)
    assert "b2" in server.done


def test_a_clone_is_stopped_too_when_its_order_goes(rig):
    builder, server, driver, cloner = rig
    cloner.gate = threading.Event()
    builder.follow([order()])
    wait_for(lambda: cloner.clones, 10, "the clone to start")
    builder.follow([])
    _finished(builder)
    assert not driver.builds and not server.failed and not cloner.clones[0].exists()


def test_a_failed_build_reports_its_error_with_the_log_tail(rig):
    builder, server, driver, _ = rig
    driver.build_output = [f"line {i:04d} " + "x" * 60 for i in range(500)]
    driver.build_error = "The command '/bin/sh -c false' returned a non-zero code: 1"
    builder.follow([order()])
    _finished(builder)
    failure = server.failed["b1"]
    assert failure.error.startswith(driver.build_error)
    assert "line 0499" in failure.error and "line 0000" not in failure.error
    assert len(failure.error) <= 4096 and failure.commit == SHA
    assert "line 0000" in server.text("b1")  # the whole log is on the server
    assert not driver.registry


def test_a_clone_that_fails_says_why(rig):
    builder, server, _, cloner = rig
    cloner.error = f"commit {SHA} is not in git://git.example/app.git (main)"
    builder.follow([order()])
    _finished(builder)
    assert server.failed["b1"].error.startswith(cloner.error)


def test_a_build_past_its_time_is_stopped_and_reported_timed_out(rig):
    builder, server, driver, _ = rig
    driver.build_gate = threading.Event()
    builder.follow([order().model_copy(update={"timeout_seconds": 0.3})])
    _finished(builder)
    assert server.failed["b1"].error.startswith("timed out after 0.3 s")
    assert not driver.registry


def test_the_log_is_sent_again_from_the_same_offset_after_a_failed_send(rig):
    builder, server, driver, _ = rig
    server.log_faults = 1
    builder.follow([order()])
    _finished(builder)
    offsets = [off for _, off, _ in server.log_calls]
    assert offsets[0] == offsets[1] == 0  # the failed chunk again, from where it began
    text = server.text("b1")
    assert text.count("Successfully built") == 1 and text.startswith("cloning ")


def test_a_report_the_server_missed_is_sent_again_not_rebuilt(rig):
    builder, server, driver, _ = rig
    server.report_faults = 1
    server.orders = [order()]
    builder.follow(server.orders)
    _finished(builder)
    assert not server.done
    builder.follow(server.orders)  # still listed: the report is pending, no second build
    _finished(builder)
    assert builder.send_reports() is False and "b1" in server.done
    assert len(driver.builds) == 1


def test_an_agent_restarted_mid_build_reports_failure_instead_of_resuming(rig, tmp_path):
    builder, server, driver, _ = rig
    driver.build_gate = threading.Event()
    builder.follow([order()])
    wait_for(lambda: driver.builds, 10, "the build to start")
    builder.halt_running("the agent is stopping")  # as on SIGTERM; a crash leaves the same
    _finished(builder)
    assert not server.failed and not server.done
    again = Builder(server, driver, tmp_path, [1], cloner=FakeCloner())
    again.follow([order()])  # still queued on the server: not built again
    _finished(again)
    assert again.send_reports() is False
    assert server.failed["b1"].error == RESTARTED and server.failed["b1"].commit == SHA
    assert len(driver.builds) == 1
    assert f"127.0.0.1:5000/p/app:20261126-{SHA[:7]}" not in driver.images


def test_the_loop_outlives_surprises_and_stops_its_build_when_the_agent_stops(rig):
    builder, server, driver, _ = rig
    server.poll_faults = [RuntimeError("a bug"), TemporaryError("server away")]
    server.orders = [order("b1")]
    builder.retry_seconds = 0.05
    stop = threading.Event()
    loop = threading.Thread(target=builder.run, args=(stop,))
    loop.start()
    try:
        wait_for(lambda: "b1" in server.done, 10, "the first build")
        driver.build_gate = threading.Event()
        server.orders = [order("b2")]  # b1 reported: the server lists the next one
        wait_for(lambda: len(driver.builds) == 2, 10, "the second build to start")
    finally:
        stop.set()
        loop.join(10)
    assert not loop.is_alive() and "b2" not in server.done and "b2" not in server.failed
    assert (builder.book.root / "b2.started").exists()  # reported failed at the next start


def test_a_builder_without_reserved_cores_is_refused(tmp_path):
    with pytest.raises(PermanentError, match="reserved-cores"):
        Builder(FakeBuildServer(), FakeDriver(), tmp_path, [])


def test_halt_keeps_the_first_reason():
    halt = Halt()
    halt("timeout")
    halt("cancelled")
    assert halt.reason == "timeout" and halt.event.is_set()


def _agent_config(*flags: str):
    from dockyard.compute import cli

    p = cli._parser()
    return cli._config(p, p.parse_args(["--token-file", "/dev/null", *flags]))


def test_builds_label_the_host_with_its_reserved_cores():
    from dockyard.model.builds import BUILDS_LABEL

    cfg = _agent_config("--builds", "--reserved-cores", "0-1")
    assert cfg.labels[BUILDS_LABEL] == "0-1"
    assert BUILDS_LABEL not in _agent_config("--reserved-cores", "1").labels


def test_builds_without_reserved_cores_exit_2_saying_what_to_add(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "dockyard.compute.cli", "--token-file", "/dev/null", "--builds",
         "--server", "http://127.0.0.1:9", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--builds needs --reserved-cores" in out.stderr
    assert "never on an instance's" in out.stderr
    assert not (tmp_path / "state").exists()


def test_the_agent_starts_the_builder_on_its_reserved_cores_and_stops_it(tmp_path):
    from types import SimpleNamespace

    from dockyard.compute import cli
    from dockyard.compute.agent import AgentConfig

    cfg = AgentConfig(server="http://127.0.0.1:9", token="t", host="h", state_dir=tmp_path,
                      reserved_cores=[0, 1])  # fmt: skip
    stopping = threading.Event()
    builder = cli._start_builds(SimpleNamespace(cfg=cfg, driver=FakeDriver()), None, stopping)
    assert builder.cores == [0, 1] and builder.sizer is not None
    thread = next(t for t in threading.enumerate() if t.name == "builds")
    stopping.set()
    thread.join(10)
    assert not thread.is_alive()
