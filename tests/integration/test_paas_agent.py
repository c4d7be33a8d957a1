"""The agent's side of the PaaS against a real dockerd and the kernel's bridges: an
agent in this process (the Docker driver, the host plumber, the /proc view writer) is
handed desired states as the server would hand them, and a neighbour on the bridge
(a probe namespace) looks at the instance the way users do.

    env and a config file reach PID 1's children; a rebuild to another image keeps
    the IP, MAC, hostname, volume and /proc view and answers ping; http, tcp and cmd
    health checks go healthy when busybox httpd listens, unhealthy when it is killed.
"""

from __future__ import annotations

import secrets
import tarfile
import uuid
from pathlib import Path

import pytest

from dockyard.compute.agent import Agent, AgentConfig
from dockyard.compute.client import FakeServer
from dockyard.compute.monitor import FakeMeter
from dockyard.compute.procfs import ProcView
from dockyard.compute.volumes import FakeVolumes
from dockyard.images import rootfs, tarball
from dockyard.model import (
    ConfigFile,
    DesiredInstance,
    DesiredState,
    HealthCheck,
    ImageSource,
    InstanceReport,
    NetSpec,
    PowerState,
    TaskState,
    VolumeAttachment,
)
from tests.integration.cluster import Probe, private_dockerd, run, wait_for
from tests.integration.conftest import _can_run
from tests.unit.fakehost import InlineExecutor

pytestmark = pytest.mark.root

V1, V2 = "dockyard-test/paas:1", "dockyard-test/paas:2"
RC_LOCAL = """#!/bin/sh
echo "$APP_MODE" > /tmp/mode
mkdir -p /www && echo ok > /www/index.html
"""


def _image_v2(dest: Path) -> None:
    rootfs.build(dest)
    with tarfile.open(dest, "a") as tar:
        tarball.add_file(tar, "etc/release", b"2\n", 0o644)


class Host:
    """An agent in this process on a private dockerd, and a probe on its bridge."""

    def __init__(self, root: Path, dockerd_url: str) -> None:
        from dockyard.compute.drivers.docker import DockerDriver
        from dockyard.compute.plumber import HostPlumber

        tag = secrets.token_hex(3)
        self.bridge, self.subnet = f"dyt-{tag}", f"198.18.{int(tag[:2], 16) % 200 + 20}"
        self.root, self.volume = root, root / "data"
        self.volume.mkdir()
        self.driver = DockerDriver("paas", dockerd_url)
        self.driver.ensure_image(V1, rootfs.build, ["/sbin/init"])
        self.driver.ensure_image(V2, _image_v2, ["/sbin/init"])
        self.server = FakeServer("paas")
        cfg = AgentConfig(server="http://fake", token="t", host="paas", state_dir=root / "agent")
        self.agent = Agent(
            cfg, self.driver, self.server, plumber=HostPlumber(), views=ProcView(),
            meter=FakeMeter(), volumes=FakeVolumes(), pool=InlineExecutor(),
        )  # fmt: skip
        self.agent.plumber.bridge_netfilter("allow")
        self.probe = Probe(tag, self.bridge, f"{self.subnet}.254/24")
        self.generation = 0

    def want(self, iid: str, **changes: object) -> DesiredInstance:
        net = NetSpec(
            bridge=self.bridge, uplink=None, mtu=1500, ip=f"{self.subnet}.7", prefixlen=24,
            gateway=None, mac=f"02:00:c6:12:{int(self.subnet.split('.')[2]):02x}:07", dns=[],
        )  # fmt: skip
        base = DesiredInstance(
            id=iid, name="web7", hostname="web7", image_id="i", image_ref=V1,
            image_source=ImageSource.docker, image_sha256=None, command=["/sbin/init"],
            vcpus=1, memory_mb=96, dedicated=False, cpuset=[], pids_limit=200,
            volumes=[VolumeAttachment(host_path=str(self.volume), path="/data")],
            net=net, power="running", task_state=None, power_state=PowerState.running,
            reboot_seq=0, env={"APP_MODE": "blue"},
            files=[ConfigFile(path="/etc/rc.local", content=RC_LOCAL, mode=0o755)],
        )  # fmt: skip
        return base.model_copy(update=changes)

    def desire(self, *wants: DesiredInstance) -> None:
        self.generation += 1
        self.agent.receive(DesiredState(generation=self.generation, instances=list(wants)))

    def converge(self, what: str, done: object) -> None:
        def passed() -> bool:
            self.agent.reconcile_once()
            return bool(done())  # type: ignore[operator]

        wait_for(passed, 60, what, 0.2)

    def sh(self, iid: str, script: str) -> str:
        return self.driver.exec(iid, ["sh", "-c", script], timeout=20).output

    def status(self, iid: str) -> str | None:
        h = self.agent.health.health(iid)
        return h.status if h else None

    def errors(self, iid: str) -> list[InstanceReport]:
        return [r for r in self.server.reports_of(iid) if r.error]

    def reported(self, iid: str) -> str | None:
        """The health status the server heard last."""
        said = [r.health.status for r in self.server.reports_of(iid) if r.health]
        return said[-1] if said else None

    def close(self) -> None:
        self.agent.health.stop()
        for obs in self.driver.list():
            self.agent.worker.destroy(obs.instance_id)
        self.probe.stop()
        run("ip", "link", "del", self.bridge, check=False)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    with private_dockerd("paas") as d:
        h = Host(tmp_path_factory.mktemp("paas"), d.url)
        try:
            h.probe.start()
            yield h
        finally:
            h.close()


def test_env_and_a_config_file_reach_the_instance_and_a_rebuild_keeps_its_identity(host):
    iid = str(uuid.uuid4())
    want = host.want(iid)
    host.desire(want)
    host.converge("the instance to run", lambda: host.probe.ping(want.net.ip))
    # PID 1 ran the config file (written before its first start) with the env
    assert host.sh(iid, "cat /tmp/mode") == "blue\n"
    assert host.sh(iid, "ls -l /etc/rc.local").startswith("-rwxr-xr-x")
    host.sh(iid, "echo kept > /data/mark; echo gone > /root/scratch")
    mac = host.sh(iid, "cat /sys/class/net/eth0/address")
    before = host.driver.inspect(iid)

    rebuilt = host.want(iid, image_ref=V2, rebuild_seq=1, env={"APP_MODE": "green"},
                        task_state=TaskState.rebuilding)  # fmt: skip
    host.desire(rebuilt)
    host.converge("the rebuild", lambda: host.driver.inspect(iid).rebuild_seq == 1)
    host.converge("the rebuilt instance to answer", lambda: host.probe.ping(want.net.ip))

    after = host.driver.inspect(iid)
    assert after.container_id != before.container_id and after.running
    assert host.sh(iid, "cat /etc/release") == "2\n"  # the new image
    assert host.sh(iid, "cat /tmp/mode") == "green\n"  # the new env, the files again
    assert host.sh(iid, "cat /sys/class/net/eth0/address") == mac
    assert host.sh(iid, "hostname") == "web7\n"
    assert host.sh(iid, "cat /data/mark") == "kept\n"  # the volume stays
    assert host.sh(iid, "ls /root") == ""  # the writable layer went
    assert host.sh(iid, "grep MemTotal /proc/meminfo").split()[1] == "98304"  # its view
    assert host.server.reports_of(iid)[-1].rebuilt_seq == 1

    host.desire(rebuilt.model_copy(update={"power": "deleted"}))
    host.converge("the instance to go", lambda: host.driver.inspect(iid) is None)


def test_a_rebuild_whose_image_cannot_be_pulled_leaves_the_instance_running(host):
    iid = str(uuid.uuid4())
    want = host.want(iid, volumes=[])
    host.desire(want)
    host.converge("the instance to run", lambda: host.probe.ping(want.net.ip))
    before = host.driver.inspect(iid)

    nowhere = "127.0.0.1:9/dockyard-test/missing@sha256:" + "0" * 64
    host.desire(host.want(iid, volumes=[], image_ref="dockyard-test/missing:1",
                          image_pulls=[nowhere], rebuild_seq=1,
                          task_state=TaskState.rebuilding))  # fmt: skip
    host.converge("the failure to be reported", lambda: host.errors(iid))

    [error] = host.errors(iid)
    assert "dockyard-test/missing:1" in error.error and error.rebuilt_seq == 0
    now = host.driver.inspect(iid)
    assert (now.container_id, now.started_at, now.running) == (
        before.container_id,
        before.started_at,
        True,
    )
    assert host.probe.ping(want.net.ip)
    host.desire(want.model_copy(update={"power": "deleted"}))
    host.converge("the instance to go", lambda: host.driver.inspect(iid) is None)


@pytest.mark.parametrize(
    "check",
    [
        HealthCheck(kind="http", port=8080, path="/index.html", interval_s=0.3, timeout_s=1,
                    unhealthy_after=2),
        HealthCheck(kind="tcp", port=8080, interval_s=0.3, timeout_s=1, unhealthy_after=2),
        HealthCheck(kind="cmd", command=["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
                    interval_s=0.3, timeout_s=2, unhealthy_after=2),
    ],
    ids=["http", "tcp", "cmd"],
)  # fmt: skip
def test_a_health_check_follows_httpd_and_is_reported(host, check):
    iid = str(uuid.uuid4())
    host.desire(host.want(iid, health_check=check, volumes=[]))
    host.converge("the instance to run", lambda: host.status(iid) is not None)
    wait_for(lambda: host.status(iid) == "unhealthy", 30, "unhealthy: nothing listens")

    host.sh(iid, "httpd -p 8080 -h /www")
    wait_for(lambda: host.reported(iid) == "healthy", 30, "healthy once httpd listens")
    assert host.status(iid) == "healthy"

    host.sh(iid, "killall httpd")
    wait_for(lambda: host.reported(iid) == "unhealthy", 30, "unhealthy once httpd is killed")
    detail = host.agent.health.health(iid).detail
    assert detail, "an unhealthy instance says why"
    host.desire(host.want(iid, power="deleted"))
    host.converge("the instance to go", lambda: host.driver.inspect(iid) is None)
