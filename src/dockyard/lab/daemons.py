"""The daemons of a Dockyard host as processes: their command lines, a private dockerd,
a dockyard-server; shared by lab hosts (a netns each), the one-host cloud in the root
namespace (``onehost``), the tests and bench/.

Nothing here imports Dockyard's internals: the server and the agent are started as
``python -m`` processes, dockerd is asked over its socket (the Engine API over HTTP).
"""

from __future__ import annotations

import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from dockyard.lab.procs import (
    LabError,
    free_port,
    mounts_under,
    remove_cgroups,
    run,
    stop_proc,
    wait_for,
)


def dockerd_cmd(
    data_root: Path, exec_root: Path | str, sock: Path | str, cgroup_parent: str,
    pidfile: Path, netns: str | None = None, live_restore: bool = False,
) -> list[str]:  # fmt: skip
    """A dockerd with its own socket, data root, exec root and cgroup parent that
    touches no bridge, iptables or NAT of the machine; in ``netns`` through nsenter
    --net (``ip netns exec`` would remount /sys and hide the cgroups)."""
    cmd = [
        "dockerd", "--data-root", str(data_root), "--exec-root", str(exec_root),
        "--host", f"unix://{sock}", "--pidfile", str(pidfile),
        "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip6tables=false",
        "--cgroup-parent", cgroup_parent,
    ]  # fmt: skip
    if live_restore:
        cmd.append("--live-restore")
    return (["nsenter", f"--net=/run/netns/{netns}"] if netns else []) + cmd


def agent_cmd(url: str, token_file: Path, host_name: str, state_dir: Path, *args: str) -> list[str]:
    """An agent with a token an admin issued for it (`dockyard host token NAME`); its
    /metrics on a free loopback port (several one-host clouds share the host's network)."""
    return [
        sys.executable, "-m", "dockyard.compute.cli", "--server", url,
        "--token-file", str(token_file), "--host-name", host_name,
        "--state-dir", str(state_dir), "--metrics-listen", "127.0.0.1:0", *args,
    ]  # fmt: skip


def agent_views(state_dir: Path) -> Path:
    """Where an agent with ``state_dir`` keeps its instances' /proc views (its
    default, compute/procfs.py's default_views_root): removed with the host."""
    return Path("/run/dockyard-agent") / str(state_dir.absolute()).lstrip("/") / "views"


def remove_agent_views(state_dir: Path) -> None:
    """After: ``agent_views(state_dir)`` is gone, and so are its parents that are empty."""
    views = agent_views(state_dir)
    shutil.rmtree(views, ignore_errors=True)
    for parent in views.parents:
        if parent == Path("/run"):
            break
        try:
            parent.rmdir()
        except OSError:
            break  # another agent's views, or not there


def joining_agent_cmd(
    url: str, ca_hash: str, host_name: str, state_dir: Path, *args: str
) -> list[str]:
    """An agent that joins as `dockyard host add` prints it, its one-time token in the
    environment (DOCKYARD_JOIN_TOKEN, not on the command line); once joined, its
    state dir holds its own credential and the same command starts from that."""
    return [
        sys.executable, "-m", "dockyard.compute.cli", "--join", url,
        "--ca-hash", ca_hash, "--host-name", host_name, "--state-dir", str(state_dir), *args,
    ]  # fmt: skip


def server_cmd(state_dir: Path, listen: str, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "dockyard.api.server", "--state-dir", str(state_dir),
        "--listen", listen, "--log-level", "warning", *args,
    ]  # fmt: skip


def engine(sock: Path | str, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request to the dockerd on ``sock`` (its Engine API)."""
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=60) as c:
        return c.request(method, f"http://docker{path}", **kw)


def healthy(url: str, ca: Path | None = None) -> bool:
    """The server at ``url`` answers /healthz (over https verified against ``ca``)."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
    try:
        return httpx.get(f"{url}/healthz", timeout=1, verify=verify).status_code == 200
    except httpx.TransportError:
        return False


class Dockerd:
    """A private dockerd in the root namespace (or ``netns``): files under ``root``
    (data in root/data, log in root/dockerd.log), exec root /run/dyk-<tag>, cgroup
    parent dockyard-itest-<tag>. ``stop`` removes its mounts and cgroups too."""

    def __init__(self, root: Path, tag: str, netns: str | None = None) -> None:
        self.root, self.netns = root, netns
        self.exec_root = Path(f"/run/dyk-{tag}")  # short: unix socket paths are limited
        self.sock = root / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.cgroup_parent = f"dockyard-itest-{tag}"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        data = self.root / "data"
        pidfile = self.root / "dockerd.pid"
        return dockerd_cmd(data, self.exec_root, self.sock, self.cgroup_parent, pidfile, self.netns)

    def start(self) -> None:
        log = (self.root / "dockerd.log").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, start_new_session=True)
        wait_for(self.ping, 60, f"dockerd to answer (see {self.root}/dockerd.log)", 0.2)

    def ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise LabError(f"dockerd exited; see {self.root}/dockerd.log")
        try:
            return engine(self.sock, "GET", "/_ping").status_code == 200
        except httpx.TransportError:
            return False

    def engine(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return engine(self.sock, method, path, **kw)

    def remove_containers(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            for c in self.engine("GET", "/containers/json", params={"all": "1"}).json():
                self.engine("DELETE", f"/containers/{c['Id']}", params={"force": "1", "v": "1"})
        except httpx.HTTPError:
            pass  # a dockerd that does not answer: its containers go with its cgroup

    def stop(self) -> list[Path]:
        """After: dockerd has exited, nothing stays mounted under its roots, its cgroup
        parent is gone (retried: containers' cgroups go asynchronously). Returns the
        cgroups left."""
        if self.proc is not None:
            stop_proc(self.proc, timeout=30)
            self.proc = None
        # a dockerd stopped early in its start leaves its data root mounted on itself
        for mount in reversed(mounts_under(self.root) + mounts_under(self.exec_root)):
            run("umount", "-l", mount, check=False)
        return remove_cgroups(self.cgroup_parent)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def private_dockerd(prefix: str) -> Iterator[Dockerd]:
    """A dockerd of its own, removed afterwards with everything it made."""
    tag = secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix=f"dyk-{prefix}-{tag}-"))
    d = Dockerd(root, tag)
    try:
        d.start()
        yield d
    finally:
        d.stop()
        shutil.rmtree(d.exec_root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


class ServerProcess:
    """A dockyard-server subprocess on 127.0.0.1."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, admin: str) -> None:
        self.proc, self.url, self.admin = proc, url, admin

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
        raise LabError(f"no {key} in /proc/{self.proc.pid}/status")

    def rss_kb(self) -> int:
        """Resident memory of the server now (VmRSS)."""
        return self._status("VmRSS")

    def peak_rss_kb(self) -> int:
        """The most resident memory the server has had (VmHWM)."""
        return self._status("VmHWM")

    def terminate(self, timeout: float) -> bool:
        """SIGTERM; True when the server exited within ``timeout`` seconds."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False


@contextmanager
def server(
    state_dir: Path, db_url: str, *args: str, ca: Path | None = None
) -> Iterator[ServerProcess]:
    """A real dockyard-server on ``db_url`` (its log in state_dir/server.log), killed
    afterwards. ``ca``: it serves https (give --tls-cert/--tls-key in ``args``) and is
    waited for with its certificate verified against this CA."""
    port = free_port()
    log = (state_dir / "server.log").open("wb")
    cmd = server_cmd(state_dir, f"127.0.0.1:{port}", "--db", db_url, *args)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"{'https' if ca else 'http'}://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise LabError((state_dir / "server.log").read_text())
            return healthy(url, ca)

        wait_for(up, 30, "the server to come up")
        yield ServerProcess(proc, url, (state_dir / "admin.token").read_text().strip())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
