"""The build runner (compute/builds.py) against a fake server, a fake cloner and the
fake driver: what the server (and so the user) sees of a build order."""

from __future__ import annotations

import os
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
MEMORY = 2048  # MiB the test's build host keeps for builds (its --reserved-memory-mb)


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
    builder = Builder(server, driver, tmp_path, [1], memory_mb=MEMORY, cloner=cloner)
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
    again = Builder(server, driver, tmp_path, [1], memory_mb=MEMORY, cloner=FakeCloner())
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
        Builder(FakeBuildServer(), FakeDriver(), tmp_path, [], memory_mb=MEMORY)


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

    cfg = _agent_config("--builds", "--reserved-cores", "0-1", "--reserved-memory-mb", "2048")
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
                      reserved_cores=[0, 1], reserved_memory_mb=3072)  # fmt: skip
    stopping = threading.Event()
    agent = SimpleNamespace(cfg=cfg, driver=FakeDriver())
    builder = cli._start_builds(agent, None, stopping, "none")
    assert builder.cores == [0, 1] and builder.sizer is not None
    assert builder.memory_mb == 3072 and builder.network == "none"
    thread = next(t for t in threading.enumerate() if t.name == "builds")
    stopping.set()
    thread.join(10)
    assert not thread.is_alive()


def test_the_builds_cgroup_is_a_sibling_of_the_agents_never_inside_it():
    from dockyard.compute.cli import builds_cgroup

    assert builds_cgroup("dyl1h0/agent") == "dyl1h0/dockyard-builds"  # a lab host's
    assert builds_cgroup("dockyard-agent") == "dockyard-builds"
    assert builds_cgroup("off") == "dockyard-builds"


def test_builds_without_reserved_memory_exit_2_saying_what_to_add(capsys):
    with pytest.raises(SystemExit) as exc:
        _agent_config("--builds", "--reserved-cores", "1")
    assert exc.value.code == 2
    assert "--builds needs --reserved-memory-mb" in capsys.readouterr().err


def test_an_order_asking_more_memory_than_the_host_keeps_fails_saying_so(rig):
    builder, server, driver, cloner = rig
    builder.follow([order(memory_mb=MEMORY + 1)])
    _finished(builder)
    error = server.failed["b1"].error
    assert error.startswith(f"the build asks for {MEMORY + 1} MiB of memory")
    assert "--reserved-memory-mb" in error and "--build-memory-mb" in error
    assert not cloner.clones and not driver.builds  # nothing cloned or built


def test_a_timeout_during_the_push_stops_it_and_nothing_is_pushed(rig):
    builder, server, driver, _ = rig
    driver.push_gate = threading.Event()  # a push that takes long (a big image)
    builder.follow([order().model_copy(update={"timeout_seconds": 0.5})])
    _finished(builder)
    assert server.failed["b1"].error.startswith("timed out after 0.5 s")
    assert not driver.registry and "b1" not in server.done


def test_a_cancel_during_the_push_stops_it_and_reports_nothing(rig):
    builder, server, driver, _ = rig
    driver.push_gate = threading.Event()
    builder.follow([order()])
    wait_for(lambda: "pushing" in server.text("b1") or driver.calls.count("push"), 10, "push")
    builder.follow([])  # cancelled on the server
    _finished(builder)
    assert not driver.registry and not server.done and not server.failed


def test_one_huge_line_never_grows_the_log_or_its_tail_past_their_caps(rig):
    """A step printing 8 MiB without a newline, four times, to a server that is away:
    what the agent holds stays within the log's cap and the tail's, whole lines or not."""
    from dockyard.compute.builds import TAIL_MAX, LogPipe
    from dockyard.model.builds import BUILD_LOG_MAX

    _, server, _, _ = rig
    server.log_faults = 10**6  # nothing is taken: everything stays pending
    halt = Halt()
    pipe = LogPipe(server, "b1", halt)
    try:
        for _ in range(4):
            pipe("y" * (8 << 20))
        pipe("the step failed")
        with pipe._lock:
            assert len(pipe.pending) <= BUILD_LOG_MAX
            assert sum(len(line) for line in pipe.tail) <= 2 * TAIL_MAX
        assert len(pipe.last_lines()) <= TAIL_MAX and "the step failed" in pipe.last_lines()
    finally:
        pipe.close(patience=0)


def test_the_builders_output_is_cut_in_lines_of_64_kib_however_long_a_line_is():
    """dockerd's stream of a step that prints 32 MiB without a newline (in 1 MiB
    messages): no line held or logged is longer than 64 KiB and a cut, and the lines
    after it come through."""
    from dockyard.compute.drivers.docker_build import _follow

    def stream():
        for _ in range(32):
            yield {"stream": "z" * (1 << 20)}
        yield {"stream": "\nStep 2/2 : RUN true\n"}
        yield {"aux": {"ID": "sha256:" + "a" * 64}}

    lines: list[str] = []
    image = _follow(stream(), lines.append, threading.Event())
    assert image == "sha256:" + "a" * 64
    assert max(len(line) for line in lines) <= (64 << 10) + 20
    assert sum(len(line) for line in lines) <= (64 << 10) + 100  # the rest was dropped
    assert lines[-1] == "Step 2/2 : RUN true"


class FakeEngine:
    """The SDK's low-level client as docker_build uses it: what the build asked of
    dockerd (query, headers), and the answers of a build that succeeds."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict, dict]] = []
        self.pruned = 0

    def info(self) -> dict:
        return {"CgroupDriver": "cgroupfs", "DockerRootDir": "/"}

    def _url(self, path: str) -> str:
        return f"http+docker://localhost/v1.47{path}"

    def _post(self, url, data=None, params=None, headers=None, stream=False, timeout=None):
        self.posts.append((url, dict(params or {}), dict(headers or {})))
        return object()

    def _raise_for_status(self, response) -> None:
        pass

    def _stream_helper(self, response, decode=False):
        yield {"stream": "Successfully built abc\n"}
        yield {"aux": {"ID": "sha256:" + "b" * 64}}

    def prune_images(self, filters=None) -> dict:
        self.pruned += 1
        return {"SpaceReclaimed": 0}


def _spec(tmp_path: Path):
    from dockyard.compute.driver import BuildSpec

    return BuildSpec(tmp_path, "Dockerfile", "127.0.0.1:5000/p/app:20261126-0123456", [1], 256,
                     "dyk-test-builds", 300)  # fmt: skip


@pytest.fixture
def made_cgroups(monkeypatch):
    from dockyard import cgroups

    made: list[tuple[str, int]] = []
    monkeypatch.setattr(cgroups, "make_parent", lambda name, n: made.append((name, n)) or [])
    return made


def test_a_build_asks_for_no_network_low_cpu_shm_a_pids_limited_parent_and_no_logins(
    tmp_path, made_cgroups
):
    from dockyard.compute.drivers import docker_build

    engine = FakeEngine()
    image = docker_build.build(engine, _spec(tmp_path), lambda _: None, threading.Event(),
                               lambda path, dockerfile: open(os.devnull, "rb"))  # fmt: skip
    assert image == "sha256:" + "b" * 64
    url, params, headers = engine.posts[0]
    assert url.endswith("/build") and params["networkmode"] == "none"
    assert params["cgroupparent"] == "/dyk-test-builds"
    assert made_cgroups == [("dyk-test-builds", 300)]
    assert params["cpushares"] == 2 and params["shmsize"] == 64 << 20
    assert params["cpusetcpus"] == "1" and params["memory"] == params["memswap"] == 256 << 20
    assert params["buildargs"] == "{}"  # no proxies of root's docker config
    assert headers["X-Registry-Config"] == "e30="  # {}: none of root's registry logins


def test_a_build_on_a_full_disk_is_refused_after_pruning_the_builds_leftovers(
    tmp_path, made_cgroups, monkeypatch
):
    from dockyard.compute.drivers import docker_build

    monkeypatch.setattr(docker_build, "_free", lambda root: 0.04)
    engine = FakeEngine()
    with pytest.raises(PermanentError, match=r"has 4% free, under the 10% builds need"):
        docker_build.build(engine, _spec(tmp_path), lambda _: None, threading.Event(),
                           lambda path, dockerfile: open(os.devnull, "rb"))  # fmt: skip
    assert engine.pruned == 1 and not engine.posts


def test_a_push_without_a_login_sends_an_empty_one_never_roots():
    """docker-py given auth_config=None looks up ~/.docker/config.json's login for the
    registry and sends it: the push must say {} instead."""
    from types import SimpleNamespace

    from dockyard.compute.drivers.docker_images import DockerImages

    sent: list[object] = []

    def push(repo, tag, stream, decode, auth_config):
        sent.append(auth_config)
        yield {"status": "pushed"}
        yield {"aux": {"Digest": "sha256:" + "c" * 64}}

    images = DockerImages(SimpleNamespace(push=push))  # no dockerd: only its push is used
    assert images.push("127.0.0.1:5000/p/app:t") == "sha256:" + "c" * 64
    assert sent == [{}]


def test_the_builds_cgroup_parent_is_made_with_its_task_limit_and_low_weight_v1_and_v2(
    tmp_path,
):
    from dockyard import cgroups

    v1 = tmp_path / "v1"
    for controller in ("pids", "cpu"):
        (v1 / controller).mkdir(parents=True)
    made = cgroups.make_parent("lab1/dockyard-builds", 300, fs=v1)
    assert (v1 / "pids/lab1/dockyard-builds/pids.max").read_text() == "300"
    assert (v1 / "cpu/lab1/dockyard-builds/cpu.shares").read_text() == "2"
    assert len(made) == 2
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (v2 / "cgroup.subtree_control").write_text("memory\n")
    (v2 / "lab1").mkdir()
    (v2 / "lab1" / "cgroup.subtree_control").write_text("cpu pids\n")
    cgroups.make_parent("lab1/dockyard-builds", 300, fs=v2)
    assert (v2 / "cgroup.subtree_control").read_text() in ("+pids", "+cpu")  # written
    assert (v2 / "lab1/dockyard-builds/pids.max").read_text() == "300"
    assert (v2 / "lab1/dockyard-builds/cpu.weight").read_text() == "1"
    with pytest.raises(ValueError):
        cgroups.make_parent("../escape", 300, fs=v1)
