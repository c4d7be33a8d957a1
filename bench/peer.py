"""Dockyard against Incus on this machine: create -> answers ping, and memory.

Run as root (issue 9, item 4):

    .venv/bin/python -m bench.peer --install-incus          # 3 rounds of 20
    .venv/bin/python -m bench.peer --install-incus --quick  # 1 round of 2

What each side gets:

- the same busybox rootfs (``dockyard image build-demo``) plus an /etc/rc.local
  that, when the environment names an ``IP``, sets it on eth0 and sends one
  gratuitous ARP.  Dockyard plumbs eth0 from the host, so there the script is a
  no-op; Incus passes ``environment.IP`` to the container's init, so there the
  container sets its own fixed address (Incus can only hand out fixed
  addresses through DHCP on a managed bridge, which Dockyard does not use).
- a plain bridge made here, 198.18.x addresses, no DHCP, no NAT, and a probe
  namespace on it that pings the instance every 20 ms (one ``ping -i 0.02``
  per instance; the probe's ARP retransmit time is 20 ms too).
- Incus: ``incusd --group root`` started here without systemd, with its own
  INCUS_DIR (a temp dir: /var/lib/incus is not touched), a ``dir`` pool and a
  profile with one bridged NIC and ``security.privileged=true`` (Docker's
  containers have no user namespace either).  No limits, no anti-spoofing.
- Dockyard: a one-host cloud on a private dockerd (dockyard.lab.onehost)
  with its limits, /proc view, anti-spoofing and action log all on.

Rounds alternate Incus, Dockyard via the CLI (``server create --wait``) and via
the REST API (POST, then the instance's watch until ACTIVE); each round is ``--count``
sequential creates, a delete, ``--count`` concurrent creates, a delete. For the
concurrent phase it also prints the CPU seconds each part used (server, agent, dockerd,
shims, incusd, the clients): on 2 cores, what a burst costs in CPU bounds its wall time.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dockyard.lab.daemons import Dockerd  # noqa: E402
from dockyard.lab.onehost import OneHost as Cluster  # noqa: E402
from dockyard.lab.onehost import Probe  # noqa: E402
from dockyard.lab.procs import run, wait_for  # noqa: E402
from dockyard.lab.procs import stop_proc as stop_pid  # noqa: E402

RC_LOCAL = b"""#!/bin/sh
# bench/peer: an instance whose manager does not plumb eth0 sets its own address.
[ -n "$IP" ] || exit 0
ip link set lo up
ip addr add "$IP/24" dev eth0
ip link set eth0 up
arping -U -c 1 -w 0 -I eth0 "$IP" >/dev/null 2>&1 &
"""
BACKPORTS = Path("/etc/apt/sources.list.d/dockyard-bench-backports.sources")
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
APT_LOCK = ("-o", "DPkg::Lock::Timeout=300")


# --- installing and removing Incus


def installed_packages() -> dict[str, str]:
    out = run(
        "dpkg-query", "-W", "-f", "${Package}:${Architecture} ${Version} ${db:Status-Status}\n"
    )
    rows = (line.split() for line in out.stdout.splitlines())
    return {r[0]: r[1] for r in rows if len(r) == 3 and r[2] == "installed"}


def debian_mirror() -> str:
    """The Debian mirror apt already uses for bookworm (deb822 or one-line sources)."""
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        if not path.is_file() or path == BACKPORTS:
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields = dict(
                    line.split(":", 1) for line in stanza.splitlines() if ":" in line[:12]
                )
                suites = fields.get("Suites", "").split()
                if "bookworm" in suites and "main" in fields.get("Components", ""):
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                parts = line.split()
                if len(parts) >= 4 and parts[0] == "deb" and parts[2] == "bookworm":
                    return parts[1]
    raise SystemExit("no apt source for Debian bookworm found; cannot add bookworm-backports")


def incusd_path() -> str | None:
    """incusd is not on PATH in Debian's package (it lives under /usr/lib*)."""
    found = shutil.which("incusd")
    if found:
        return found
    listed = run("dpkg", "-L", "incus-base", check=False).stdout.split()
    return next((p for p in listed if p.endswith("/incusd") and os.access(p, os.X_OK)), None)


SYSTEM_PATHS = [Path(p) for p in ("/var/lib/incus", "/var/log/incus", "/var/cache/incus")]


def groups() -> set[str]:
    return {line.split(":")[0] for line in Path("/etc/group").read_text().splitlines()}


@contextmanager
def incus_installed() -> Iterator[list[str]]:
    """Add bookworm-backports, install incus-base (incusd without the VM half: no
    QEMU) and its client; afterwards purge exactly the packages that were added,
    drop the source and its lists, and what the packages left behind."""
    before, had_groups = installed_packages(), groups()
    had_paths = {p for p in SYSTEM_PATHS if p.exists()}
    BACKPORTS.write_text(
        f"Types: deb\nURIs: {debian_mirror()}\nSuites: bookworm-backports\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    added: list[str] = []
    try:
        subprocess.run(["apt-get", *APT_LOCK, "-q", "update"], check=True, env=APT_ENV)
        subprocess.run(
            ["apt-get", *APT_LOCK, "-q", "-y", "--no-install-recommends", "install",
             "-t", "bookworm-backports", "incus-base"],
            check=True, env=APT_ENV,
        )  # fmt: skip
        after = installed_packages()
        added = sorted(set(after) - set(before))
        upgraded = sorted(f"{p} {before[p]} -> {v}" for p, v in after.items()
                          if p in before and before[p] != v)  # fmt: skip
        print(f"installed for the bench: {' '.join(added)}", flush=True)
        print(f"upgraded as dependencies (stay upgraded): {upgraded or 'none'}", flush=True)
        yield added
    finally:
        uninstall(before, had_groups, had_paths)


def uninstall(before: dict[str, str], had_groups: set[str], had_paths: set[Path]) -> None:
    added = sorted(set(installed_packages()) - set(before))
    if added:
        subprocess.run(["apt-get", *APT_LOCK, "-q", "-y", "purge", *added], env=APT_ENV)
    BACKPORTS.unlink(missing_ok=True)
    for lists in Path("/var/lib/apt/lists").glob("*_dists_bookworm-backports_*"):
        lists.unlink()
    subprocess.run(["apt-get", *APT_LOCK, "-q", "check"], env=APT_ENV, capture_output=True)
    for path in SYSTEM_PATHS:
        if path.exists() and path not in had_paths:
            shutil.rmtree(path, ignore_errors=True)
    for group in sorted(groups() - had_groups):
        if group.startswith("incus"):
            run("groupdel", group, check=False)
    left = sorted(set(installed_packages()) & set(added))
    print(f"purged: {' '.join(added) or 'nothing'}; still installed: {left or 'none'}")


# --- the image both sides boot


def build_rootfs(dest: Path) -> Path:
    """`dockyard image build-demo`'s rootfs plus the /etc/rc.local above."""
    from dockyard.images import rootfs, tarball

    plain = rootfs.build(dest.with_suffix(".plain.tar"))
    with tarfile.open(plain) as src, tarfile.open(dest, "w") as out:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            out.addfile(member, data)
        tarball.add_file(out, "etc/rc.local", RC_LOCAL, 0o755)
    plain.unlink()
    return dest


def incus_metadata(dest: Path) -> Path:
    meta = (
        "architecture: x86_64\n"
        f"creation_date: {int(time.time())}\n"
        "properties:\n  description: dockyard bench busybox\n  os: busybox\n"
    ).encode()
    with tarfile.open(dest, "w") as tar:
        info = tarfile.TarInfo("metadata.yaml")
        info.size, info.mode, info.mtime = len(meta), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(meta))
    return dest


# --- reachability and memory


def pinged(probe: Probe, ip: str, timeout: float = 60) -> None:
    """Block until ``ip`` answers; the probe sends one echo request every 20 ms."""
    r = probe.exec("ping", "-n", "-q", "-c", "1", "-i", "0.02", "-w", str(int(timeout)), ip,
                   check=False)  # fmt: skip
    if r.returncode != 0:
        raise AssertionError(f"{ip} did not answer ping within {timeout}s")


def fast_arp(probe: Probe) -> None:
    probe.exec("sysctl", "-q", "-w", "net.ipv4.neigh.probe0.retrans_time_ms=20")


def children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return kids


def tree(pids: list[int]) -> set[int]:
    kids, seen, todo = children(), set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(kids.get(pid, []))
    return seen


def cmdline_has(text: str) -> list[int]:
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in path.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(path.parent.name))
        except OSError:
            continue
    return found


def rss_pss(pids: set[int]) -> tuple[int, int]:
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
    return rss, pss


def memory_cgroup_file(pid: int) -> Path | None:
    """The usage file of the memory cgroup ``pid`` lives in (cgroup v1 or v2)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        for leaf in ("/.lxc", "/init.scope"):
            rel = rel.removesuffix(leaf)
        if "memory" in controllers.split(","):
            return Path(f"/sys/fs/cgroup/memory{rel}/memory.usage_in_bytes")
    for line in lines:
        if line.startswith("0::"):
            unified = "/sys/fs/cgroup" + (
                "/unified" if Path("/sys/fs/cgroup/unified").is_dir() else ""
            )
            return Path(f"{unified}{line[3:].removesuffix('/.lxc')}/memory.current")
    return None


def cgroup_bytes(init_pids: list[int]) -> int:
    """The memory use (page cache included) of each instance's cgroup, summed."""
    total = 0
    for pid in init_pids:
        path = memory_cgroup_file(pid)
        try:
            total += int(path.read_text()) if path else 0
        except OSError:
            continue
    return total


def footprint(daemons: set[int], init_pids: list[int]) -> dict[str, float]:
    daemons -= tree(init_pids)
    rss, pss = rss_pss(daemons)
    mib = 1024 * 1024
    return {"procs": len(daemons), "instances": len(init_pids), "rss": rss / mib, "pss": pss / mib,
            "cgroups": cgroup_bytes(init_pids) / mib}  # fmt: skip



CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_of(pids: set[int]) -> dict[int, float]:
    """CPU seconds each of ``pids`` used so far, its reaped children included (the
    ``ip`` and ``nft`` an agent runs, the runc a shim runs)."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = sum(int(f) for f in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
    return used


def docker_roles(dockerd_pid: int, exec_root: Path) -> dict[str, set[int]]:
    """dockerd with its containerd, the shims, and what runs in the containers."""
    shims = set(cmdline_has(f"{exec_root}/")) - {dockerd_pid}
    inside = tree(list(shims)) - shims
    return {"dockerd": tree([dockerd_pid]) - shims - inside, "shims": shims, "instances": inside}


class CpuMeter:
    """CPU seconds by role over a phase: ``roles()`` names each role's processes; the
    bench's own process (its API clients) and the commands it ran (CLIs, ping) are
    the role "clients". Processes that start during the phase count from zero;
    daemons' children that end in it count through their parent."""

    def __init__(self, roles: Callable[[], dict[str, set[int]]]) -> None:
        self.roles = roles

    def __enter__(self) -> CpuMeter:
        self.before = {r: cpu_of(p) for r, p in self.roles().items()}
        self.clients = self._clients()
        self.used: dict[str, float] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        for role, pids in self.roles().items():
            was = self.before.get(role, {})
            self.used[role] = sum(t - was.get(pid, 0.0) for pid, t in cpu_of(pids).items())
        self.used["clients"] = self._clients() - self.clients

    @staticmethod
    def _clients() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system


# --- Incus


class Incus:
    """An incusd of our own: INCUS_DIR in a temp dir, a bridge and probe of our own."""

    def __init__(self, tag: str, subnet: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"dyi-{tag}-"))
        self.subnet, self.bridge = subnet, f"dyi-{tag}"
        self.env = {**os.environ, "INCUS_DIR": str(self.root)}
        self.probe = Probe(f"i{tag}", self.bridge, f"{subnet}.254/24")
        self.proc: subprocess.Popen[bytes] | None = None
        self.lxc_cgroups: set[Path] | None = None

    def incus(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["incus", *args], capture_output=True, text=True, env=self.env)
        if check and r.returncode != 0:
            raise AssertionError(f"incus {' '.join(args)} failed: {r.stderr.strip()}")
        return r

    def start(self, rootfs: Path) -> None:
        self.lxc_cgroups = cgroup_dirs("lxc.*")  # liblxc leaves lxc.pivot behind
        self.probe.start()  # makes the bridge too
        fast_arp(self.probe)
        log = (self.root / "incusd.log").open("ab")
        self.proc = subprocess.Popen(
            [incusd_path() or "incusd", "--group", "root"], stdout=log, stderr=log, env=self.env,
            start_new_session=True,
        )  # fmt: skip
        wait_for(self._answers, 60, "incusd to answer", interval=0.2)
        self.incus("storage", "create", "bench", "dir")
        self.incus("profile", "create", "bench")
        self.incus("profile", "set", "bench", "security.privileged=true")
        self.incus("profile", "device", "add", "bench", "root", "disk", "path=/", "pool=bench")
        self.incus("profile", "device", "add", "bench", "eth0", "nic", "nictype=bridged",
                   f"parent={self.bridge}", "name=eth0")  # fmt: skip
        meta = incus_metadata(self.root / "meta.tar")
        self.incus("image", "import", str(meta), str(rootfs), "--alias", "bench-busybox")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"incusd exited; see {self.root}/incusd.log")
        return self.incus("info", check=False).returncode == 0

    def create(self, i: int) -> float:
        ip = f"{self.subnet}.{10 + i}"
        start = time.monotonic()
        self.incus("launch", "bench-busybox", f"b{i}", "-p", "bench", "-c", f"environment.IP={ip}")
        pinged(self.probe, ip)
        return time.monotonic() - start

    def names(self) -> list[str]:
        return [i["name"] for i in json.loads(self.incus("list", "-f", "json").stdout)]

    def clean(self) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: self.incus("delete", "-f", n, check=False), self.names()))

    def init_pids(self) -> list[int]:
        return [i["state"]["pid"] for i in json.loads(self.incus("list", "-f", "json").stdout)
                if i.get("state") and i["state"].get("pid")]  # fmt: skip

    def daemons(self) -> set[int]:
        assert self.proc is not None
        return tree([self.proc.pid]) | set(cmdline_has(f"[lxc monitor] {self.root}"))

    def roles(self) -> dict[str, set[int]]:
        return {"incusd": self.daemons()}  # its lxc monitors and their containers too

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.clean()
                self.incus("image", "delete", "bench-busybox", check=False)
                self.incus("profile", "delete", "bench", check=False)
                self.incus("storage", "delete", "bench", check=False)
            finally:
                stop_pid(self.proc, timeout=30)
        self.probe.stop()
        run("ip", "link", "del", self.bridge, check=False)
        for mount in reversed(mounts_under(self.root)):
            run("umount", "-l", mount, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.lxc_cgroups is not None:
            remove_new_cgroups(self.lxc_cgroups, "lxc.*")


def cgroup_dirs(pattern: str) -> set[Path]:
    """Cgroup directories named ``pattern`` at most four levels deep, any hierarchy."""
    root = Path("/sys/fs/cgroup")
    return {p for depth in range(1, 5) for p in root.glob("/".join(["*"] * depth)[:-1] + pattern)
            if p.is_dir()}  # fmt: skip


def remove_new_cgroups(before: set[Path], pattern: str) -> None:
    """rmdir (empty ones only) the cgroups named ``pattern`` that were not there before."""
    for path in sorted(cgroup_dirs(pattern) - before, key=lambda p: -len(p.parts)):
        for sub in sorted(path.glob("**/"), key=lambda p: -len(p.parts)):
            with suppress(OSError):
                sub.rmdir()


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/mounts") as f:
        return [p for p in (line.split()[1] for line in f) if p.startswith(prefix)]


# --- Dockyard


def _ok(r: httpx.Response) -> Any:
    assert r.status_code < 300, r.text
    return r.json()


class Dockyard:
    """A one-host Dockyard (dockyard.lab.onehost) with the same rootfs."""

    def __init__(self) -> None:
        self.cluster = Cluster()

    def start(self, rootfs: Path) -> None:
        c = self.cluster
        c.start()
        fast_arp(c.probe)
        c.cli("network", "create", "net", "--cidr", f"{c.subnet}.0/24", "--bridge", c.bridge,
              "--pool", f"{c.subnet}.10-{c.subnet}.99")  # fmt: skip
        c.cli("flavor", "create", "small", "--vcpus", "1", "--memory", "128")
        c.cli("image", "import", "demo", "--rootfs", str(rootfs))
        auth = {"authorization": f"Bearer {c.admin}"}
        self.http = httpx.Client(base_url=f"{c.url}/v1", headers=auth, timeout=60)
        self.via_api(999)  # warm-up: the agent loads the image once
        self.clean()

    def via_cli(self, i: int) -> float:
        start = time.monotonic()
        inst = self.cluster.create(f"c{i}")
        pinged(self.cluster.probe, inst["ip"])
        return time.monotonic() - start

    def via_api(self, i: int) -> float:
        c, start = self.cluster, time.monotonic()
        body = {"name": f"a{i}", "image": "demo", "flavor": "small", "network": "net"}
        http = self.http  # one client, kept open: a client per call costs its TLS set-up
        r = http.post("/instances", json=body)
        inst, version = _ok(r), r.headers.get("etag", "").strip('"')  # the watch starts there
        while inst["status"] != "ACTIVE":  # the instance watch answers when its state changes
            out = _ok(http.get(f"/instances/{inst['id']}/watch",
                               params={"since": version, "wait": 25}))  # fmt: skip
            version, inst = out["version"], out["instance"]
            if time.monotonic() - start > 60:
                raise AssertionError(f"{inst['name']} not ACTIVE after 60 s: {inst['status']}")
        pinged(c.probe, inst["ip"])
        return time.monotonic() - start

    def clean(self) -> None:
        c = self.cluster
        for inst in c.api("GET", "/instances"):
            c.api("DELETE", f"/instances/{inst['id']}")
        wait_for(lambda: not c.api("GET", "/instances"), 120, "instances to go")

    def init_pids(self) -> list[int]:
        return self.cluster.init_pids()

    def daemons(self) -> set[int]:
        c = self.cluster
        top = [p.pid for p in (c.server_proc, c.agent_proc, c.dockerd.proc) if p is not None]
        shims = [p for p in cmdline_has(f"{c.dockerd.exec_root}/") if p not in top]
        return tree(top) | set(shims)

    def roles(self) -> dict[str, set[int]]:
        c = self.cluster
        assert c.server_proc and c.agent_proc and c.dockerd.proc
        return {"server": tree([c.server_proc.pid]), "agent": tree([c.agent_proc.pid]),
                **docker_roles(c.dockerd.proc.pid, c.dockerd.exec_root)}  # fmt: skip

    def stop(self) -> None:
        if getattr(self, "http", None) is not None:
            self.http.close()
        self.cluster.stop()
        remove_new_cgroups(set(), self.cluster.dockerd.cgroup_parent)  # dockerd's parent


# --- the runtime's floor: Docker's Engine API with NetworkDisabled, and the same plumbing


class DockerFloor:
    """What no manager on top of Docker can beat: the Engine API and `ip`, nothing else.

    Each create is a ``POST /containers/create`` (NetworkDisabled, as the agent
    makes its containers: bench/docker_start.py) and a start on the same dockerd
    Dockyard uses, one inspect for the init's PID (the three over one keep-alive
    connection from this process), then the plumbing Dockyard does (a MAC derived
    from the IP, a veth pair made with its peer inside the container's netns as
    eth0, the host end on a plain bridge, eth0's address set through nsenter),
    until the probe's ping answers. No limits, no anti-spoofing, no /proc view, no
    database, no action log. (``docker run --net=none``, this floor until session
    11, costs twice dockerd's time: libnetwork's sandbox and its prestart hook.)
    """

    def __init__(self, dockerd: Dockerd, tag: str, subnet: str, rootfs: Path) -> None:
        self.env, self.dockerd = {**os.environ, "DOCKER_HOST": dockerd.url}, dockerd
        self.subnet, self.bridge, self.tag = subnet, f"dyf-{tag}", tag
        self.probe = Probe(f"f{tag}", self.bridge, f"{subnet}.254/24")
        self.image = f"dockyard-bench-floor:{tag}"
        self.rootfs = rootfs
        self.serial = itertools.count()  # a dead netns frees its veth asynchronously
        self.engine = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(dockerd.sock)), base_url="http://docker",
            timeout=120, limits=httpx.Limits(max_connections=64),
        )  # fmt: skip

    def docker(self, *args: str) -> str:
        r = subprocess.run(["docker", *args], capture_output=True, text=True, env=self.env)
        if r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout.strip()

    def start(self) -> None:
        self.probe.start()  # makes the bridge too
        fast_arp(self.probe)
        self.docker("import", "--change", 'CMD ["/sbin/init"]', str(self.rootfs), self.image)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.engine.request(method, path, **kw)
        if r.is_error:
            raise AssertionError(f"{method} {path}: {r.status_code} {r.text.strip()}")
        return r.json() if r.content else None

    def create(self, i: int) -> float:
        n = next(self.serial)
        ip, name = f"{self.subnet}.{10 + i}", f"dyf-{self.tag}-{n}"
        start = time.monotonic()
        body = {"Image": self.image, "Labels": {"dockyard-bench-floor": ""},
                "NetworkDisabled": True, "HostConfig": {"NetworkMode": "none"}}  # fmt: skip
        cid = self._call("POST", "/containers/create", params={"name": name}, json=body)["Id"]
        self._call("POST", f"/containers/{cid}/start")
        pid = str(self._call("GET", f"/containers/{cid}/json")["State"]["Pid"])
        host_if = f"dyf{self.tag}{n:x}"
        mac = "02:00:" + ":".join(f"{int(o):02x}" for o in ip.split("."))  # stable, as Dockyard's
        batch = (f"link add {host_if} type veth peer name eth0 address {mac} netns {pid}\n"
                 f"link set {host_if} master {self.bridge} up\n")  # fmt: skip
        run("ip", "-batch", "-", input=batch)
        inside = f"addr add {ip}/24 dev eth0\nlink set lo up\nlink set eth0 up\n"
        run("nsenter", "-t", pid, "-n", "ip", "-batch", "-", input=inside)
        pinged(self.probe, ip)
        return time.monotonic() - start

    def clean(self) -> None:
        ids = self.docker("ps", "-aq", "--filter", "label=dockyard-bench-floor").split()
        for one in ids:  # the veth pairs go with the netns
            # one at a time: twenty at once wedged Debian 12's dockerd 20.10.24 here (a
            # libnetwork lock-order deadlock between endpoint deletes and its store
            # watch, moby/libnetwork#2679); the floor's clean is not measured
            self.docker("rm", "-f", one)

    def init_pids(self) -> list[int]:
        return []

    def daemons(self) -> set[int]:
        return set()

    def roles(self) -> dict[str, set[int]]:
        assert self.dockerd.proc is not None  # Dockyard's dockerd: it is not its own
        return docker_roles(self.dockerd.proc.pid, self.dockerd.exec_root)

    def stop(self) -> None:
        with suppress(AssertionError):
            self.clean()
        with suppress(AssertionError):
            self.docker("rmi", self.image)
        self.engine.close()
        self.probe.stop()
        run("ip", "link", "del", self.bridge, check=False)


# --- rounds and the report

Create = Callable[[int], float]


def concurrent(fn: Create, count: int) -> float:
    start = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(fn, range(count)))
    return time.monotonic() - start


def one_round(
    fn: Create, clean: Callable[[], None], count: int, owner: Any
) -> tuple[list[float], float, dict[str, float]]:
    seq = [fn(i) for i in range(count)]
    clean()
    with CpuMeter(owner.roles) as cpu:
        wall = concurrent(fn, count)
    return seq, wall, cpu.used  # the caller deletes after measuring memory


def p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, int(round(len(s) * 0.9)) - 1)]


def report(
    results: dict[str, dict[str, list[float]]], mem: dict[str, Any], cpu: Cpu, count: int
) -> None:
    rounds = len(next(iter(results.values()))["wall"])
    print(f"\ncreate -> answers ping: {count} per phase, {rounds} rounds, all rounds pooled")
    bases = [b for b in ("incus", "docker floor") if b in results]
    head = "".join(f" {'x ' + b + ' seq':>18} {'conc':>6}" for b in bases)
    print(f"{'':13} {'seq median':>11} {'seq p90':>9} {'concurrent':>11} {'conc p90':>9}{head}")
    for name, r in results.items():
        ms, mw = statistics.median(r["seq"]), statistics.median(r["wall"])
        ratios = ""
        for b in bases:
            bs, bw = statistics.median(results[b]["seq"]), statistics.median(results[b]["wall"])
            ratios += f" {ms / bs:17.2f}x {mw / bw:5.2f}x"
        print(f"{name:13} {ms:10.3f}s {p90(r['seq']):8.3f}s {mw:10.3f}s {p90(r['wall']):8.3f}s"
              f"{ratios}")  # fmt: skip
    print("\nmemory (MiB): daemons RSS / PSS; N instances: their memory cgroups, summed")
    for name, m in mem.items():
        for when in ("idle", "loaded"):
            if when in m:
                x = m[when]
                print(
                    f"{name:8} {when:6} {x['procs']:3.0f} procs  RSS {x['rss']:7.1f}  "
                    f"PSS {x['pss']:7.1f}  {x['instances']:2.0f} instances {x['cgroups']:6.1f}"
                )
    print(f"\nCPU seconds used while {count} were created at once, by role (median of rounds);"
          " 'clients' is this script and the commands it ran (CLIs, docker, ip, ping)")
    roles = sorted({role for runs in cpu.values() for one in runs for role in one})
    print(f"{'':13}" + "".join(f" {role:>9}" for role in roles) + f" {'total':>9}")
    for name, runs in cpu.items():
        cells = [f"{statistics.median(one[role] for one in runs):8.2f}s"
                 if role in runs[0] else f"{'-':>9}" for role in roles]  # fmt: skip
        total = statistics.median(sum(one.values()) for one in runs)
        print(f"{name:13} {' '.join(cells)} {total:8.2f}s")
    print(json.dumps({"results": results, "memory": mem, "cpu": cpu}))


Cpu = dict[str, list[dict[str, float]]]


Results = dict[str, dict[str, list[float]]]


def run_rounds(systems: dict[str, tuple[Create, Callable[[], None], Any]], rounds: int,
               count: int) -> tuple[Results, dict[str, Any], Cpu]:  # fmt: skip
    results = {n: {"seq": [], "wall": []} for n in systems}  # type: dict[str, dict[str, list[float]]]
    mem: dict[str, Any] = {}
    cpus: dict[str, list[dict[str, float]]] = {}
    owners = {id(owner): n.split()[0] for n, (_, _, owner) in systems.items()}
    for _, _, owner in systems.values():
        if not owner.daemons():
            continue  # nothing of its own runs (the floor uses Dockyard's dockerd)
        mem.setdefault(owners[id(owner)], {})["idle"] = footprint(owner.daemons(), [])
    for r in range(rounds):
        for name, (fn, clean, owner) in systems.items():
            seq, wall, cpu = one_round(fn, clean, count, owner)
            results[name]["seq"] += seq
            results[name]["wall"].append(wall)
            cpus.setdefault(name, []).append(cpu)
            if r == rounds - 1 and owners[id(owner)] in mem:
                mem[owners[id(owner)]]["loaded"] = footprint(owner.daemons(), owner.init_pids())
            clean()
            used = sum(cpu.values())
            print(f"round {r + 1} {name}: seq median {statistics.median(seq):.3f}s, {count} "
                  f"concurrent {wall:.3f}s using {used:.2f}s CPU", flush=True)  # fmt: skip
    return results, mem, cpus


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 instances, 1 round")
    p.add_argument(
        "--install-incus",
        action="store_true",
        help="install incus from bookworm-backports now, purge it afterwards",
    )
    p.add_argument("--skip-incus", action="store_true", help="measure Dockyard only")
    p.add_argument(
        "--skip-floor", action="store_true", help="leave out the Engine API's create + plumbing"
    )
    args = p.parse_args()
    if args.quick:
        args.rounds, args.count = 1, 2
    if os.geteuid() != 0:
        raise SystemExit("run as root: it starts daemons and makes bridges and namespaces")
    if not (args.install_incus or args.skip_incus or incusd_path()):
        print(
            "incus is not installed. Pass --install-incus to install it from bookworm-backports"
            " for this run (purged afterwards), or --skip-incus.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    with ExitStack() as stack:
        if args.install_incus and not args.skip_incus:
            stack.enter_context(incus_installed())
        measure(stack, args)


def measure(stack: ExitStack, args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="dyk-peer-"))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    rootfs = build_rootfs(work / "rootfs.tar")
    dy = Dockyard()
    stack.callback(dy.stop)
    dy.start(rootfs)
    systems: dict[str, tuple[Create, Callable[[], None], Any]] = {}
    if not args.skip_incus:
        subnet = f"198.18.{(int(dy.cluster.subnet.split('.')[2]) + 100) % 220 + 20}"
        incus = Incus(dy.cluster.tag, subnet)
        stack.callback(incus.stop)
        incus.start(rootfs)
        incus.create(99)  # warm-up, as Dockyard had
        incus.clean()
        systems["incus"] = (incus.create, incus.clean, incus)
    if not args.skip_floor:
        subnet = f"198.18.{(int(dy.cluster.subnet.split('.')[2]) + 50) % 220 + 20}"
        floor = DockerFloor(dy.cluster.dockerd, dy.cluster.tag, subnet, rootfs)
        stack.callback(floor.stop)
        floor.start()
        floor.create(99)  # warm-up
        floor.clean()
        systems["docker floor"] = (floor.create, floor.clean, floor)
    systems["dockyard cli"] = (dy.via_cli, dy.clean, dy)
    systems["dockyard api"] = (dy.via_api, dy.clean, dy)
    results, mem, cpu = run_rounds(systems, args.rounds, args.count)
    report(results, mem, cpu, args.count)


if __name__ == "__main__":
    main()
