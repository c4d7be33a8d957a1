"""Builds for real: a git daemon serving a commit with a Dockerfile, the Builder with
the real git cloner, a private dockerd (classic builder, on the reserved cores) and a
real registry (TLS, logins). What a user of `dockyard build` would see."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import docker
import pytest

from dockyard.compute.builds import Builder
from dockyard.compute.transfer import RegistryTransfer
from dockyard.images import distribution, logins, rootfs
from dockyard.lab.procs import remove_cgroups
from dockyard.model import RegistryLogin
from dockyard.model.builds import BuildOrder
from tests.gitserver import GitServer, git_server
from tests.integration.cluster import private_dockerd, wait_for
from tests.integration.conftest import _can_run
from tests.integration.registry_fixtures import client
from tests.registry.util import secured_registry
from tests.unit.test_builds_agent import FakeBuildServer

BASE = "dockyard-test/build-base:1"
CORES = [1]  # the host's reserved cores in these tests: builds run there only
pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def dockerd():
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    with private_dockerd("bld") as d:
        yield d


@pytest.fixture(scope="module")
def registry() -> Iterator[tuple[distribution.RegistryConfig, RegistryLogin]]:
    if shutil.which(distribution.PROGRAM) is None:
        pytest.fail("docker-registry is not installed; apt-get install docker-registry")
    root = Path(tempfile.mkdtemp(prefix="dyk-bld-registry-"))
    try:
        with secured_registry(root) as (cfg, _):
            assert cfg.logins is not None
            found = logins.read(cfg.logins).hosts
            yield cfg, RegistryLogin(username=found.username, password=found.password)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def git():
    with git_server() as s:
        yield s


@pytest.fixture(scope="module")
def driver(dockerd):
    from dockyard.compute.drivers.docker import DockerDriver

    d = DockerDriver("h1", dockerd.url)
    d.ensure_image(BASE, lambda dest: rootfs.build(dest), ["/sbin/init"])
    return d


@pytest.fixture(scope="module")
def build_cgroup() -> Iterator[str]:
    """The builds' cgroup parent of this module's builds (pids.max PIDS), removed after."""
    name = f"dyk-bld-{secrets.token_hex(3)}"
    try:
        yield name
    finally:
        remove_cgroups(name)


PIDS = 200  # the tests' task limit of the builds' cgroup (the agent's default is 1024)


@pytest.fixture
def rig(driver, registry, tmp_path, build_cgroup):
    server = FakeBuildServer()
    builder = Builder(server, driver, tmp_path, CORES, memory_mb=512,
                      sizer=RegistryTransfer(True), cgroup=build_cgroup,
                      pids_max=PIDS)  # fmt: skip
    return builder, server


def _order(git: GitServer, registry, name: str, commit: str | None, **kw) -> BuildOrder:
    cfg, login = registry
    base = dict(
        id=f"b-{name}",
        repo=git.url(name),
        ref="main",
        commit=commit,
        dockerfile="Dockerfile",
        push_repo=f"{cfg.addr}/proj/{name}",
        tag_date=datetime.now(UTC).strftime("%Y%m%d"),
        login=login,
        memory_mb=256,
        timeout_seconds=120,
    )
    base.update(kw)
    return BuildOrder(**base)


def _run(builder: Builder, order: BuildOrder) -> None:
    builder.follow([order])
    running = builder._running
    assert running is not None
    running[2].join(120)
    assert not running[2].is_alive()


def test_a_commit_is_built_on_the_reserved_cores_tagged_pushed_and_untagged(
    rig, git, registry, dockerd
):
    builder, server = rig
    dockerfile = (
        f"FROM {BASE}\n"
        "RUN echo built-by-dockyard && grep Cpus_allowed_list /proc/self/status\n"
        "RUN cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
        " || cat /sys/fs/cgroup/memory.max\n"
        "RUN echo hello > /hello\n"
    )
    sha = git.commit("web", {"Dockerfile": dockerfile})
    order = _order(git, registry, "web", sha)
    _run(builder, order)
    done = server.done.get(order.id)
    assert done is not None, server.failed.get(order.id)
    tag = f"{order.tag_date}-{sha[:7]}"
    assert done.commit == sha and done.tag == tag
    log = server.text(order.id)
    assert "built-by-dockyard" in log
    assert "Cpus_allowed_list:\t1\n" in log  # only the reserved core
    assert str(256 << 20) in log  # the order's memory, no more
    cfg, _ = registry
    with client(cfg) as reg:
        assert reg.manifest_digest("proj/web", tag) == done.digest
    assert done.size > 0 and set(done.seconds) == {"clone", "build", "push"}
    sdk = docker.APIClient(base_url=dockerd.url)
    try:
        assert not sdk.images(name=f"{order.push_repo}")  # the local tag is gone
        assert not sdk.containers(all=True)  # no step's container left
    finally:
        sdk.close()
    again = order.model_copy(update={"id": "b-web-again"})
    _run(builder, again)  # the same commit again: the steps' layers were kept, as the cache
    assert again.id in server.done  # (the last step ran again: its image was the tag's)
    assert server.text(again.id).count("Using cache") == 2


def test_a_failing_run_reports_failure_with_the_log_tail(rig, git, registry):
    builder, server = rig
    sha = git.commit("bad", {"Dockerfile": f"FROM {BASE}\nRUN echo about-to-fail && false\n"})
    order = _order(git, registry, "bad", sha)
    _run(builder, order)
    failure = server.failed[order.id]
    assert "returned a non-zero code: 1" in failure.error
    assert "about-to-fail" in failure.error and failure.commit == sha
    assert order.id not in server.done


def test_a_commit_that_does_not_exist_fails_clearly(rig, git, registry):
    builder, server = rig
    git.commit("nocommit", {"Dockerfile": f"FROM {BASE}\n"})
    missing = "2" * 40
    order = _order(git, registry, "nocommit", missing)
    _run(builder, order)
    assert server.failed[order.id].error.startswith(f"commit {missing} is not in ")


def test_a_build_past_its_time_is_killed_and_reported_timed_out(rig, git, registry, dockerd):
    builder, server = rig
    sha = git.commit("slow", {"Dockerfile": f"FROM {BASE}\nRUN echo sleeping && sleep 120\n"})
    order = _order(git, registry, "slow", sha).model_copy(update={"timeout_seconds": 4})
    began = time.monotonic()
    _run(builder, order)
    assert time.monotonic() - began < 20
    assert server.failed[order.id].error.startswith("timed out after 4 s")
    assert "sleeping" in server.failed[order.id].error
    sdk = docker.APIClient(base_url=dockerd.url)
    try:  # dockerd stopped the step: its container killed and removed
        wait_for(lambda: not sdk.containers(all=True), 20, "the build's container to go")
    finally:
        sdk.close()
    cfg, _ = registry
    with client(cfg) as reg:
        assert reg.manifest_digest("proj/slow", f"{order.tag_date}-{sha[:7]}") is None


def test_a_fork_bomb_in_a_step_stops_at_the_builds_task_limit_and_fails(
    rig, git, registry, dockerd, build_cgroup
):
    """A RUN that starts 2000 sleeps: the step's container sits under the builds'
    cgroup parent, whose pids.max stops it at PIDS tasks; the build fails and the host
    goes on forking."""
    builder, server = rig
    bomb = (
        f"FROM {BASE}\n"
        "RUN grep pids /proc/self/cgroup; i=0; while [ $i -lt 2000 ]; do sleep 5 & "
        "i=$((i+1)); done; echo started-all; wait\n"
    )
    sha = git.commit("bomb", {"Dockerfile": bomb})
    order = _order(git, registry, "bomb", sha)
    _run(builder, order)
    failure = server.failed.get(order.id)
    assert failure is not None, "the fork bomb's build succeeded"
    log = server.text(order.id)
    assert "started-all" not in log.splitlines() and "can't fork" in log, log[-2000:]
    line = next(x for x in log.splitlines() if ":pids:" in x)
    assert line.split(":pids:")[1].startswith(f"/{build_cgroup}/")  # under the parent
    limit = Path("/sys/fs/cgroup/pids", build_cgroup, "pids.max")
    if not limit.exists():  # cgroup v2
        limit = Path("/sys/fs/cgroup", build_cgroup, "pids.max")
    assert limit.read_text().strip() == str(PIDS)
    assert subprocess.run(["true"], check=False).returncode == 0  # the host still forks
    sdk = docker.APIClient(base_url=dockerd.url)
    try:
        wait_for(lambda: not sdk.containers(all=True), 20, "the step's container to go")
    finally:
        sdk.close()
    assert os.path.isdir(limit.parent)  # the parent stays for the next build
