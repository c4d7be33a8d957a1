"""Snapshots on a real dockerd and a real registry (TLS, logins): commit, flatten, push.

The promises of ComputeDriver.commit/flatten/push/remove_image, and the one a user
notices: an instance can be snapshotted, moved by digest and snapshotted again forever,
its image flattened to one layer past the threshold and still starting.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from dockyard.compute.driver import ContainerSpec, container_name
from dockyard.errors import PermanentError
from dockyard.images import distribution, logins, rootfs
from dockyard.model import RegistryLogin
from tests.integration.cluster import private_dockerd
from tests.integration.conftest import _can_run
from tests.registry.util import secured_registry

IMAGE = "dockyard-test/snap-base:1"
pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def dockerd():
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    with private_dockerd("snp") as d:
        yield d


@pytest.fixture(scope="module")
def registry() -> Iterator[tuple[distribution.RegistryConfig, RegistryLogin]]:
    if shutil.which(distribution.PROGRAM) is None:
        pytest.fail("docker-registry is not installed; apt-get install docker-registry")
    root = Path(tempfile.mkdtemp(prefix="dyk-snap-registry-"))
    try:
        with secured_registry(root) as (cfg, _):
            assert cfg.logins is not None
            found = logins.read(cfg.logins).hosts
            yield cfg, RegistryLogin(username=found.username, password=found.password)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def driver(dockerd):
    from dockyard.compute.drivers.docker import DockerDriver

    d = DockerDriver("h1", dockerd.url)
    d.ensure_image(IMAGE, lambda dest: rootfs.build(dest), ["/sbin/init"])
    yield d
    for obs in d.list():
        d.destroy(obs.instance_id)


@pytest.fixture
def sdk(dockerd):
    client = docker.DockerClient(base_url=dockerd.url)
    yield client
    client.close()


def _spec(image: str) -> ContainerSpec:
    return ContainerSpec(
        instance_id=str(uuid.uuid4()),
        name="s",
        hostname="s",
        image_ref=image,
        command=["/sbin/init"],
        vcpus=1,
        cpuset=[],
        memory_mb=64,
        pids_limit=64,
    )


def _run(driver, sdk, image: str, write: str = "") -> str:
    """A running instance of ``image`` that wrote ``write`` to /root/<write>."""
    s = _spec(image)
    driver.create(s)
    driver.start(s.instance_id)
    if write:
        out = sdk.containers.get(container_name(s.instance_id)).exec_run(
            ["sh", "-c", f"echo {write} > /root/{write}"]
        )
        assert out.exit_code == 0, out.output
    return s.instance_id


def _cat(sdk, instance_id: str, path: str) -> str:
    out = sdk.containers.get(container_name(instance_id)).exec_run(["cat", path])
    return out.output.decode().strip() if out.exit_code == 0 else f"<exit {out.exit_code}>"


def _ref(cfg: distribution.RegistryConfig, tag: str) -> str:
    return f"{cfg.addr}/snapshots/chain:{tag}"


def test_commit_adds_one_layer_and_push_gives_a_digest_that_pulls_back(driver, sdk, registry):
    cfg, login = registry
    iid = _run(driver, sdk, IMAGE, write="hello")
    ref = _ref(cfg, "one")
    assert driver.commit(iid, ref) == driver.layers(IMAGE) + 1
    assert driver.inspect(iid).running  # paused for the commit, not stopped
    digest = driver.push(ref, login)
    assert digest.startswith("sha256:") and driver.push(ref, login) == digest  # again: same
    driver.remove_image(ref)
    driver.remove_image(ref)  # already gone: no-op
    with pytest.raises(PermanentError):
        driver.layers(ref)
    moved = "dockyard-test/moved:1"
    driver.ensure_image(moved, None, None, [f"{cfg.addr}/snapshots/chain@{digest}"], login)
    assert _cat(sdk, _run(driver, sdk, moved), "/root/hello") == "hello"


def test_a_chain_of_snapshots_past_the_threshold_is_flattened_and_goes_on(driver, sdk, registry):
    """flatten_at 3: base (1) -> 2 layers -> 3 = flattened to 1 -> 2 -> ... forever."""
    cfg, login = registry
    image, seen = IMAGE, []
    for n in range(4):
        iid = _run(driver, sdk, image, write=f"gen{n}")
        ref = _ref(cfg, f"gen{n}")
        layers = driver.commit(iid, ref)
        if layers >= 3:
            layers = driver.flatten(ref)
        seen.append(layers)
        digest = driver.push(ref, login)
        driver.remove_image(ref)
        driver.destroy(iid)
        image = f"dockyard-test/gen{n}:1"
        driver.ensure_image(image, None, None, [f"{cfg.addr}/snapshots/chain@{digest}"], login)
    assert seen == [2, 1, 2, 1]
    last = _run(driver, sdk, image)
    assert driver.inspect(last).running
    assert [_cat(sdk, last, f"/root/gen{n}") for n in range(4)] == [f"gen{n}" for n in range(4)]


def test_flatten_makes_one_layer_and_keeps_the_config_the_instance_runs_with(driver, sdk):
    iid = str(uuid.uuid4())
    made = sdk.containers.create(
        IMAGE,
        command=["/sbin/init"],
        name=container_name(iid),
        environment={"APP_MODE": "blue green", "EMPTY": ""},
        working_dir="/root",
        network_mode="none",
    )
    ref = "dockyard-test/flat:1"
    try:
        made.start()
        assert made.exec_run(["sh", "-c", "echo kept > /root/kept"]).exit_code == 0
        assert driver.commit(iid, ref) == 2
    finally:
        made.remove(force=True)
    assert driver.flatten(ref) == 1 and driver.flatten(ref) == 1  # already flat: no-op
    config = sdk.images.get(ref).attrs["Config"]
    assert config["Cmd"] == ["/sbin/init"] and config["WorkingDir"] == "/root"
    assert {"APP_MODE=blue green", "EMPTY="} <= set(config["Env"])
    started = _run(driver, sdk, ref)
    assert driver.inspect(started).running and _cat(sdk, started, "kept") == "kept"
    driver.destroy(started)
    driver.remove_image(ref)
    with pytest.raises(PermanentError):
        driver.flatten(ref)
    assert not [c for c in sdk.containers.list(all=True) if c.name.startswith("dy-flatten-")]


def test_commit_of_a_missing_container_is_permanent_and_makes_nothing(driver):
    with pytest.raises(PermanentError):
        driver.commit(str(uuid.uuid4()), "dockyard-test/none:1")
    with pytest.raises(PermanentError):
        driver.layers("dockyard-test/none:1")


def test_a_push_with_a_wrong_login_is_refused(driver, sdk, registry):
    cfg, _ = registry
    iid = _run(driver, sdk, IMAGE)
    ref = _ref(cfg, "denied")
    driver.commit(iid, ref)
    with pytest.raises(PermanentError, match="refused"):
        driver.push(ref, RegistryLogin(username="dockyard-hosts", password="wrong"))
    driver.remove_image(ref)


def test_a_worker_moves_an_instance_root_fs_by_snapshot_order_and_digest(
    dockerd, registry, sdk, tmp_path
):
    """The agent's half of a cold migration on real Docker: the source worker stops,
    commits and pushes once per order; a target worker spawns from the digest with the
    file the instance wrote. Network, views and volumes are fakes (tested elsewhere)."""
    from dockyard.compute.drivers.docker import DockerDriver
    from dockyard.compute.reconcile import Step
    from dockyard.model import Limits, PowerState, SnapshotOrder, TaskState
    from tests.unit.fakehost import FakeHost, instance

    cfg, login = registry
    source, target = FakeHost(tmp_path / "a"), FakeHost(tmp_path / "b")
    source.driver = target.driver = DockerDriver("h1", dockerd.url)
    source.driver.ensure_image(IMAGE, lambda dest: rootfs.build(dest), ["/sbin/init"])
    iid = str(uuid.uuid4())
    want = instance(iid, limits=Limits(procview=False)).model_copy(
        update={"image_ref": IMAGE, "command": ["/sbin/init"]}
    )
    source.worker().run(Step.spawn, want)
    sdk.containers.get(container_name(iid)).exec_run(["sh", "-c", "echo moved > /root/f"])
    order = SnapshotOrder(id="m1", push_ref=_ref(cfg, "m1"), login=login, consistent=True)
    leaving = want.model_copy(
        update={"power": "stopped", "task_state": TaskState.migrating, "snapshot": order}
    )
    try:
        source.worker().run(Step.snapshot, leaving)
        source.worker().run(Step.snapshot, leaving)  # again: reported, not redone
        first, again = source.server.reports_of(iid)[-2:]
        assert first == again and first.error is None and first.power_state == PowerState.shutdown
        assert {"stop", "commit", "push"} <= set(first.snapshot.seconds)
        assert not source.driver.inspect(iid).running
        source.driver.destroy(iid)  # the target must not find the source's container
        pulls = [f"{cfg.addr}/snapshots/chain@{first.snapshot.digest}"]
        arriving = want.model_copy(
            update={
                "image_ref": "dockyard-test/arrived:m1",
                "image_pulls": pulls,
                "image_pull_login": login,
            }
        )
        target.worker().run(Step.spawn, arriving)
        assert target.driver.inspect(iid).running and _cat(sdk, iid, "/root/f") == "moved"
    finally:
        source.driver.destroy(iid)


def test_a_migration_pushes_the_upper_dir_as_one_layer_and_the_target_runs_it(
    dockerd, registry, sdk, tmp_path
):
    """The migration path without a docker commit: the stopped container's overlay upper
    directory goes up as one layer on the instance's image (already in the registry);
    the target pulls it by digest and sees the files written, and not those removed
    (whiteouts) or hidden by a directory made again (opaque)."""
    from dockyard.compute.drivers.docker import DockerDriver
    from dockyard.compute.reconcile import Step
    from dockyard.compute.transfer import RegistryTransfer
    from dockyard.model import Limits, SnapshotOrder, TaskState
    from tests.unit.fakehost import FakeHost, instance

    cfg, login = registry
    source, target = FakeHost(tmp_path / "a"), FakeHost(tmp_path / "b")
    source.driver = target.driver = DockerDriver("h1", dockerd.url)
    source.transfer = RegistryTransfer()  # loopback: unverified, as dockerd does
    source.driver.ensure_image(IMAGE, lambda dest: rootfs.build(dest), ["/sbin/init"])
    sdk.images.get(IMAGE).tag(f"{cfg.addr}/snapshots/base", "1")
    base = f"{cfg.addr}/snapshots/base@{source.driver.push(f'{cfg.addr}/snapshots/base:1', login)}"
    iid = str(uuid.uuid4())
    want = instance(iid, limits=Limits(procview=False)).model_copy(
        update={"image_ref": IMAGE, "command": ["/sbin/init"]}
    )
    source.worker().run(Step.spawn, want)
    script = (
        "echo moved > /root/f && ln /root/f /root/g && rm /etc/group "
        "&& rm -rf /var && mkdir -p /var/new && echo n > /var/new/n && chmod 4711 /root/f"
    )
    assert sdk.containers.get(container_name(iid)).exec_run(["sh", "-c", script]).exit_code == 0
    push_ref = _ref(cfg, "layered")
    order = SnapshotOrder(
        id="m2", push_ref=push_ref, login=login, consistent=True, layer_on=base
    )
    leaving = want.model_copy(
        update={"power": "stopped", "task_state": TaskState.migrating, "snapshot": order}
    )
    try:
        source.worker().run(Step.snapshot, leaving)
        [done] = source.server.reports_of(iid)[-1:]
        assert done.error is None and done.snapshot.layers == 2
        assert "commit" not in done.snapshot.seconds
        assert not [i for i in sdk.images.list() if push_ref in i.tags]  # nothing kept here
        source.driver.destroy(iid)
        pulls = [f"{cfg.addr}/snapshots/chain@{done.snapshot.digest}"]
        arriving = want.model_copy(
            update={"image_ref": "dockyard-test/arrived:m2", "image_pulls": pulls,
                    "image_pull_login": login}  # fmt: skip
        )
        target.worker().run(Step.spawn, arriving)
        assert target.driver.inspect(iid).running
        assert _cat(sdk, iid, "/root/f") == "moved" and _cat(sdk, iid, "/var/new/n") == "n"
        assert _cat(sdk, iid, "/etc/group") == "<exit 1>"
        ls = sdk.containers.get(container_name(iid)).exec_run(["ls", "-ln", "/root/f", "/var"])
        out = ls.output.decode()
        assert "-rws--x--x    2 0" in out and "log" not in out, out
    finally:
        source.driver.destroy(iid)
