"""The integration tests' one-host cloud: ``dockyard.lab.onehost`` (the same harness
bench/ and `dockyard lab` use) plus what only tests need: a docker SDK client on the
private dockerd and dropping nft rules a killed agent left.

    dockerd  private socket, data root and exec root; --bridge=none --iptables=false
    server   dockyard-server on 127.0.0.1:<free port>, SQLite in a temp dir
    agent    dockyard-agent for host "itest", DOCKER_HOST -> the private dockerd
    bridge   dyt-<hex>, created by the agent on first plumb (or by the probe)
    probe    netns dyp-<hex> with a veth on the bridge, 198.18.<n>.254
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

import docker

from dockyard.lab.daemons import Dockerd, private_dockerd
from dockyard.lab.onehost import OneHost, Probe
from dockyard.lab.procs import free_port, free_ports, mounts_under, remove_cgroups, run, wait_for
from dockyard.lab.procs import stop_proc as stop_pid

__all__ = [
    "Cluster", "Dockerd", "Probe", "free_port", "free_ports", "mounts_under", "private_dockerd",
    "remove_cgroups", "run", "stop_pid", "wait_for",
]  # fmt: skip


class Cluster(OneHost):
    def __init__(self) -> None:
        super().__init__()
        self.docker: docker.DockerClient | None = None

    def start(self) -> None:
        super().start()
        self.docker = docker.DockerClient(base_url=self.dockerd.url)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.docker is not None:
                self.docker.close()

    def before_links_go(self) -> None:
        """The anti-spoofing rules of this cluster's ports, if its agent died before
        removing them (with the last port, the table and the bridge's iptables rule)."""
        if shutil.which("nft") is None:
            return
        from dockyard.network import firewall

        for key in self.instance_link_keys():
            try:
                firewall.remove_port("dy" + key)
            except Exception as exc:  # cleanup goes on; the log says what stayed
                print(f"could not remove the nft rules of dy{key}: {exc}", file=sys.stderr)

    def container(self, instance_id: str) -> Any:
        assert self.docker is not None
        return self.docker.containers.get(f"dy-{instance_id}")

    def containers(self) -> list[str]:
        assert self.docker is not None
        return [c.name for c in self.docker.containers.list(all=True)]
