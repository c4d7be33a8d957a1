"""One lab host's daemons: its dockerd and its agent, inside its network namespace.

dockerd runs through ``nsenter --net`` (``ip netns exec`` would remount /sys
and hide the cgroups from it). The agent reads its links from /sys/class/net,
which shows the namespace that mounted sysfs, so it runs in a mount namespace
of its own where sysfs is mounted again from inside the host's netns, the
machine's cgroups are moved back over /sys/fs/cgroup, and its volumes
directory is a shared mount (the volumes it mounts reach dockerd).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dockyard.lab import wiring
from dockyard.lab.daemons import dockerd_cmd, engine, joining_agent_cmd, remove_agent_views
from dockyard.lab.procs import (
    LabError,
    alive,
    kill_marked,
    remove_cgroups,
    run,
    stop_pid,
    unmount_under,
    wait_for,
)

# In the agent's own mount namespace: sysfs of the host's netns, the machine's cgroups.
_AGENT_MOUNTS = (
    'mount --bind "$0" "$0" && mount --make-private "$0" && mount --make-rprivate /sys && '
    'mount --rbind /sys/fs/cgroup "$0" && '
    'mount -t sysfs sysfs /sys && mount --move "$0" /sys/fs/cgroup && exec "$@"'
)


@dataclass
class LabHost:
    name: str
    az: str
    index: int
    netns: str
    mgmt_if: str
    uplink_if: str
    mgmt_ip: str
    dir: str
    exec_root: str
    cgroup_parent: str
    dockerd_pid: int | None = None
    agent_pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sock(self) -> str:
        return f"{self.exec_root}.sock"  # short: unix socket paths are limited

    @property
    def docker_host(self) -> str:
        return f"unix://{self.sock}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    # --- dockerd

    def start_dockerd(self) -> None:
        if alive(self.dockerd_pid, self.exec_root):
            return
        root = Path(self.dir)
        log = (root / "dockerd.log").open("ab")
        live_restore = bool(self.extra.get("live_restore", True))  # bench/upgrades compares
        cmd = dockerd_cmd(
            root / "docker", self.exec_root, self.sock, self.cgroup_parent,
            root / "dockerd.pid", netns=self.netns, live_restore=live_restore,
        )  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        self.dockerd_pid = proc.pid
        wait_for(self._docker_answers, 60, f"the dockerd of {self.name} (see {root}/dockerd.log)")

    def _docker_answers(self) -> bool:
        if not alive(self.dockerd_pid, self.exec_root):
            raise LabError(f"the dockerd of {self.name} exited; see {self.dir}/dockerd.log")
        try:
            return self.docker("GET", "/_ping").status_code == 200
        except httpx.TransportError:
            return False

    def docker(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request to this host's dockerd (its Engine API)."""
        return engine(self.sock, method, path, **kw)

    def remove_containers(self) -> None:
        if not alive(self.dockerd_pid, self.exec_root):
            return
        try:
            for c in self.docker("GET", "/containers/json", params={"all": "1"}).json():
                self.docker("DELETE", f"/containers/{c['Id']}", params={"force": "1", "v": "1"})
        except httpx.HTTPError:
            pass  # a dockerd that does not answer: its containers die with its cgroup

    def stop_dockerd(self) -> None:
        stop_pid(self.dockerd_pid, self.exec_root, timeout=30)
        self.dockerd_pid = None

    # --- agent

    def start_agent(self) -> None:
        if alive(self.agent_pid, self.dir):
            return
        root = Path(self.dir)
        moved, volumes = root / "cgroup-move", root / "agent" / "volumes"
        moved.mkdir(parents=True, exist_ok=True)
        volumes.mkdir(parents=True, exist_ok=True)
        if str(volumes) not in _mount_points():
            run("mount", "--bind", str(volumes), str(volumes))
            run("mount", "--make-shared", str(volumes))
        joining = self.extra["join"]  # Lab.join: the token `dockyard host add` gives
        agent = joining_agent_cmd(
            joining["url"], joining["ca_hash"], self.name, root / "agent",
            "--uplink", wiring.UPLINK, "--cgroup", f"{self.cgroup_parent}/agent",
            *self._down_after(), *self.extra.get("agent_args", []),
        )  # fmt: skip
        cmd = [
            "nsenter", f"--net=/run/netns/{self.netns}",
            "unshare", "--mount", "--propagation", "unchanged",
            "sh", "-c", _AGENT_MOUNTS, str(moved), *agent,
        ]  # fmt: skip
        log = (root / "agent.log").open("ab")
        env = {**os.environ, "DOCKER_HOST": self.docker_host,
               "DOCKYARD_JOIN_TOKEN": joining["token"]}  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True, env=env)
        self.agent_pid = proc.pid

    def _down_after(self) -> list[str]:
        """The server's --host-down-after: past it without an answer, the agent starts
        nothing from its cache (instances may have been evacuated meanwhile)."""
        after = self.extra.get("host_down_after")
        return [] if after is None else ["--host-down-after", str(after)]

    def stop_agent(self) -> None:
        stop_pid(self.agent_pid, self.dir)
        self.agent_pid = None

    # --- everything

    def remove(self) -> list[str]:
        """After: none of this host's processes, mounts, cgroups, links or namespace.
        Returns what could not be removed."""
        self.stop_agent()
        # an agent of this host whose PID lab.json missed (started by hand or by a test
        # that did not save the lab): its command line names this host's state dir
        kill_marked(str(Path(self.dir) / "agent"))
        self.remove_containers()
        self.stop_dockerd()
        kill_marked(self.exec_root)  # containerd shims a stopped dockerd left
        left = [str(p) for p in remove_cgroups(self.cgroup_parent)]
        remove_agent_views(Path(self.dir) / "agent")
        unmount_under(Path(self.dir))
        unmount_under(Path(self.exec_root))
        if str(Path(self.dir) / "agent" / "volumes") in _mount_points():
            run("umount", "-l", str(Path(self.dir) / "agent" / "volumes"), check=False)
        run("rm", "-rf", self.exec_root, check=False)
        Path(self.sock).unlink(missing_ok=True)
        wiring.remove_netns(self.netns, self.mgmt_if, self.uplink_if)
        return left


def _mount_points() -> set[str]:
    with open("/proc/mounts") as f:
        return {line.split()[1] for line in f}
