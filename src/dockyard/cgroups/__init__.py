"""cgroup v1 and v2: the one place that knows their paths and files.

    v1 (hybrid, this machine)                 v2 (unified)
    /sys/fs/cgroup/<controller>/<path>/...    /sys/fs/cgroup/<path>/...
    pids.current pids.max pids.events         pids.current pids.max pids.events
    memory.usage_in_bytes .limit_in_bytes     memory.current memory.max
    memory.oom_control (oom_kill N)           memory.events (oom_kill N)
    cpu.stat (nr_throttled, throttled_time ns) cpu.stat (nr_throttled, throttled_usec)
    cpu.cfs_quota_us cpu.cfs_period_us        cpu.max ("max 100000" or "50000 100000")
    cpuset.cpus                               cpuset.cpus.effective
    cpu.shares (agent: 102400)                cpu.weight (agent: 10000)

A container's cgroup is found from its init process (/proc/PID/cgroup), so
the cgroup driver (cgroupfs or systemd) and --cgroup-parent do not matter.
``Cgroup.read`` keeps the files it read open and preads them (one system call
a figure); ``close`` when the container goes. ``place_process`` puts the
agent in a cgroup of its own with a hundred times an instance's CPU weight.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Cgroup:
    """A cgroup's directories. With ``keep_open`` (the agent's, one per container)
    ``read`` keeps each file it read open until ``close``; without, it opens and
    closes each time.

    The agent reads ~16 files of every container every second (v1; ~12 on v2): an
    open, a read and a close cost three system calls and a path walk each time, a
    kept descriptor one pread (a cgroup file shows its figures afresh at offset 0;
    not the lists of tasks, see ``_LISTS``: those are opened every time).
    The view refresh and the metrics sampler read the same object from two threads:
    ``_lock`` keeps a close from reusing a descriptor another thread is reading.
    """

    version: int
    dirs: dict[str, Path]  # controller -> directory; v2 has one directory for all
    # the agent reads a few files of every container every second: join each path once
    _paths: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)
    _fds: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    keep_open: bool = field(default=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def file(self, controller: str, name: str) -> Path:
        base = self.dirs.get(controller) if self.version == 1 else self.dirs.get("")
        if base is None:
            raise FileNotFoundError(f"controller {controller} is not mounted")
        return base / name

    def path(self, controller: str, name: str) -> str:
        key = (controller, name)
        found = self._paths.get(key)
        if found is None:
            found = self._paths[key] = str(self.file(controller, name))
        return found

    def read(self, controller: str, name: str) -> str:
        """The file's text now (stripped). No such file: OSError. The cgroup gone:
        OSError, and every kept descriptor is closed (it would pin the removed cgroup)."""
        path = self.path(controller, name)
        if not self.keep_open or name in _LISTS:
            return _read(path)
        with self._lock:
            fd = self._fds.get(path)
            if fd is None:
                if len(self._fds) >= MAX_KEPT_PER_CGROUP:
                    return _read(path)
                fd = self._fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                return _pread_all(fd).strip()
            except OSError:
                self._close()
                raise

    def close(self) -> None:
        """After: no descriptor of this cgroup is open (a later ``read`` opens again)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        fds = list(self._fds.values())
        self._fds.clear()
        for fd in fds:
            os.close(fd)

    def kept(self) -> int:
        """How many descriptors ``read`` keeps open now."""
        return len(self._fds)


MAX_KEPT_PER_CGROUP = 32  # a bound, not a budget: the agent reads ~16 files (v1)
# lists of tasks are read afresh every time: v1 keeps an open file's pid list and hands
# it out again to a read at offset 0 while the file is read again within a second (the
# agent reads every second), so a process started later would never be seen
_LISTS = frozenset({"tasks", "cgroup.procs", "cgroup.threads"})
_CHUNK = 65536


def _pread_all(fd: int) -> str:
    data = os.pread(fd, _CHUNK, 0)
    while len(data) % _CHUNK == 0 and data:  # a long file (tasks of a big container)
        more = os.pread(fd, _CHUNK, len(data))
        if not more:
            break
        data += more
    return data.decode()


def of_pid(
    pid: int | str,
    proc: Path = Path("/proc"),
    fs: Path = Path("/sys/fs/cgroup"),
    keep_open: bool = False,
) -> Cgroup:
    """The cgroup of a process, v1 or v2, from /proc/PID/cgroup (``keep_open``: see
    Cgroup; whoever asks for it closes it)."""
    lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    v1: dict[str, Path] = {}
    unified = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":
            unified = rel
        for c in controllers.split(","):
            if c and not c.startswith("name="):
                v1[c] = fs / c / rel
    if v1 and (fs / "memory").is_dir():
        return Cgroup(1, v1, keep_open=keep_open)
    if unified is None:
        raise FileNotFoundError(f"no cgroup found for pid {pid}")
    return Cgroup(2, {"": fs / unified}, keep_open=keep_open)


@dataclass(frozen=True)
class DeviceIo:
    device: str  # MAJ:MIN
    read_bytes: int
    write_bytes: int
    reads: int
    writes: int


def io(cg: Cgroup) -> list[DeviceIo]:
    """Bytes and requests per block device (v1 blkio.throttle.*, which counts
    every IO whether or not a limit is set; v2 io.stat)."""
    if cg.version == 1:
        octets = _per_device(cg.read("blkio", "blkio.throttle.io_service_bytes"))
        ops = _per_device(cg.read("blkio", "blkio.throttle.io_serviced"))
        return [
            DeviceIo(d, v.get("Read", 0), v.get("Write", 0), *_rw(ops.get(d, {})))
            for d, v in sorted(octets.items())
        ]
    out = []
    for line in cg.read("io", "io.stat").splitlines():
        dev, *pairs = line.split()
        f = {k: int(v) for k, _, v in (p.partition("=") for p in pairs) if v.isdigit()}
        out.append(
            DeviceIo(
                dev, f.get("rbytes", 0), f.get("wbytes", 0), f.get("rios", 0), f.get("wios", 0)
            )
        )
    return out


def _per_device(text: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            out.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return out


def _rw(ops: dict[str, int]) -> tuple[int, int]:
    return ops.get("Read", 0), ops.get("Write", 0)


def own(proc: Path = Path("/proc"), fs: Path = Path("/sys/fs/cgroup")) -> Cgroup:
    """The cgroup of the calling process, seen from inside its container.

    Docker on v1 mounts the container's own directory of each controller at
    /sys/fs/cgroup/<controller> (read-only) while /proc/self/cgroup still
    names the host path; v2 with a cgroup namespace shows "/". Either way a
    path that does not exist under the mount means: the mount is the cgroup.
    """
    cg = of_pid("self", proc, fs)
    dirs = {c: d if d.is_dir() else _mount_root(d, fs, c) for c, d in cg.dirs.items()}
    return Cgroup(cg.version, dirs)


def _mount_root(path: Path, fs: Path, controller: str) -> Path:
    return fs / controller if controller else fs


def _read(path: Path | str) -> str:
    with open(path) as f:
        return f.read().strip()


def _kv(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


@dataclass(frozen=True)
class Pids:
    current: int
    limit: int | None
    hit: int  # how many forks the limit refused


def pids(cg: Cgroup) -> Pids:
    raw = cg.read("pids", "pids.max")
    events = _kv(cg.read("pids", "pids.events"))
    return Pids(
        int(cg.read("pids", "pids.current")),
        None if raw == "max" else int(raw),
        events.get("max", 0),
    )


@dataclass(frozen=True)
class Memory:
    usage: int
    limit: int | None
    oom_kills: int


def memory(cg: Cgroup) -> Memory:
    return Memory(*usage_and_limit(cg), oom_kills(cg))


def usage_and_limit(cg: Cgroup) -> tuple[int, int | None]:
    """Memory in use and its limit in bytes (None: unlimited); two files, for every-second use."""
    if cg.version == 1:
        limit = int(cg.read("memory", "memory.limit_in_bytes"))
        usage = int(cg.read("memory", "memory.usage_in_bytes"))
        return usage, None if limit >= 2**62 else limit
    raw = cg.read("memory", "memory.max")
    return int(cg.read("memory", "memory.current")), None if raw == "max" else int(raw)


def swap_limit(cg: Cgroup, memory_limit: int) -> int:
    """Bytes of swap allowed on top of memory; 0 when none is or it cannot be read."""
    try:
        if cg.version == 1:
            both = int(cg.read("memory", "memory.memsw.limit_in_bytes"))
            return 0 if both >= 2**62 else max(0, both - memory_limit)
        raw = cg.read("memory", "memory.swap.max")
    except (OSError, ValueError):
        return 0  # v1 without swap accounting
    return 0 if raw == "max" else int(raw)


def cpu_times(cg: Cgroup) -> tuple[float, float]:
    """(user, system) CPU seconds the cgroup has used."""
    if cg.version == 1:  # cpuacct.stat counts in USER_HZ
        stat = _kv(cg.read("cpuacct", "cpuacct.stat"))
        hz = os.sysconf("SC_CLK_TCK")
        return stat.get("user", 0) / hz, stat.get("system", 0) / hz
    stat = _kv(cg.read("cpu", "cpu.stat"))
    return stat.get("user_usec", 0) / 1e6, stat.get("system_usec", 0) / 1e6


@dataclass(frozen=True)
class Cpu:
    usage_usec: int
    nr_throttled: int
    throttled_usec: int
    quota_cores: float | None  # None: no CFS cap


def cpu(cg: Cgroup) -> Cpu:
    stat = _kv(cg.read("cpu", "cpu.stat"))
    if cg.version == 1:
        quota = int(cg.read("cpu", "cpu.cfs_quota_us"))
        period = int(cg.read("cpu", "cpu.cfs_period_us"))
        usage = int(cg.read("cpuacct", "cpuacct.usage")) // 1000
        return Cpu(
            usage,
            stat.get("nr_throttled", 0),
            stat.get("throttled_time", 0) // 1000,
            None if quota < 0 else quota / period,
        )
    q, _, p = cg.read("cpu", "cpu.max").partition(" ")
    return Cpu(
        stat.get("usage_usec", 0),
        stat.get("nr_throttled", 0),
        stat.get("throttled_usec", 0),
        None if q == "max" else int(q) / int(p),
    )


def oom_kills(cg: Cgroup) -> int:
    name = "memory.oom_control" if cg.version == 1 else "memory.events"
    return _kv(cg.read("memory", name)).get("oom_kill", 0)


def pids_hit(cg: Cgroup) -> int:
    """How many forks the pids limit refused."""
    return _kv(cg.read("pids", "pids.events")).get("max", 0)


def throttling(cg: Cgroup) -> tuple[int, int]:
    """(times throttled, µs throttled) under the CPU cap."""
    stat = _kv(cg.read("cpu", "cpu.stat"))
    if cg.version == 1:
        return stat.get("nr_throttled", 0), stat.get("throttled_time", 0) // 1000
    return stat.get("nr_throttled", 0), stat.get("throttled_usec", 0)


def cfs_periods(cg: Cgroup) -> tuple[int, int, int]:
    """(CFS periods, periods throttled, µs throttled): one read of cpu.stat."""
    stat = _kv(cg.read("cpu", "cpu.stat"))
    throttled = stat.get("throttled_time", 0) // 1000 if cg.version == 1 else None
    return (
        stat.get("nr_periods", 0),
        stat.get("nr_throttled", 0),
        stat.get("throttled_usec", 0) if throttled is None else throttled,
    )


def cpu_cap(cg: Cgroup) -> float | None:
    """The CFS cap in cores, None when uncapped."""
    if cg.version == 1:
        quota = int(cg.read("cpu", "cpu.cfs_quota_us"))
        return None if quota < 0 else quota / int(cg.read("cpu", "cpu.cfs_period_us"))
    q, _, p = cg.read("cpu", "cpu.max").partition(" ")
    return None if q == "max" else int(q) / int(p)


def cpu_weight(cg: Cgroup) -> int:
    """cpu.shares on v1, cpu.weight on v2 (what the CPU share of the container is)."""
    return int(cg.read("cpu", "cpu.shares" if cg.version == 1 else "cpu.weight"))


def cpuset(cg: Cgroup) -> str:
    name = "cpuset.cpus" if cg.version == 1 else "cpuset.cpus.effective"
    return cg.read("cpuset", name)


def set_io_limits(
    cg: Cgroup,
    device: str,
    read_bps: int | None,
    write_bps: int | None,
    read_iops: int | None,
    write_iops: int | None,
) -> None:
    """Throttle one block device (``MAJ:MIN``); None lifts that limit."""
    if cg.version == 1:
        for name, value in (
            ("read_bps", read_bps),
            ("write_bps", write_bps),
            ("read_iops", read_iops),
            ("write_iops", write_iops),
        ):
            cg.file("blkio", f"blkio.throttle.{name}_device").write_text(f"{device} {value or 0}")
        return
    fields = {"rbps": read_bps, "wbps": write_bps, "riops": read_iops, "wiops": write_iops}
    line = " ".join(f"{k}={v if v else 'max'}" for k, v in fields.items())
    cg.file("io", "io.max").write_text(f"{device} {line}")


def set_pids_max(cg: Cgroup, limit: int) -> None:
    cg.file("pids", "pids.max").write_text(str(limit))


def memory_stat(cg: Cgroup) -> dict[str, int]:
    """memory.stat in v1 names (cache, rss, shmem, inactive_file, swap)."""
    stat = _kv(cg.read("memory", "memory.stat"))
    if cg.version == 1:
        return stat
    return {
        "cache": stat.get("file", 0),
        "rss": stat.get("anon", 0),
        "shmem": stat.get("shmem", 0),
        "inactive_file": stat.get("inactive_file", 0),
        "swap": 0,
    }


def cpu_percpu_ns(cg: Cgroup) -> list[int]:
    """CPU time per host CPU in ns (v1 cpuacct.usage_percpu; v2 has no per-CPU split)."""
    if cg.version == 1:
        return [int(x) for x in cg.read("cpuacct", "cpuacct.usage_percpu").split()]
    return []


def threads(cg: Cgroup) -> list[int]:
    """Every thread id in the cgroup."""
    name = "tasks" if cg.version == 1 else "cgroup.threads"
    return [int(t) for t in cg.read("cpu", name).split()]


# a hundred times an instance's weight (docker's default and the agent's per vCPU: 1024
# shares, weight 100; v2's highest): beside 200 busy instances the agent is owed 2/3 of
# a core, and needs a fifth; a weight is a floor under contention, not a reservation
AGENT_SHARES = 102400  # v1 cpu.shares
AGENT_WEIGHT = 10000  # v2 cpu.weight


def place_process(
    name: str,
    pid: int,
    fs: Path = Path("/sys/fs/cgroup"),
    shares: int = AGENT_SHARES,
    weight: int = AGENT_WEIGHT,
) -> Path:
    """After: the CPU controller's cgroup ``name`` (a path under the hierarchy's root)
    exists with weight ``shares`` (v1) or ``weight`` (v2), and process ``pid`` with
    every one of its threads is in it (cgroup.procs moves the whole thread group).
    Already so (an agent's restart): the same, nothing else changes. Nothing may be
    written (a read-only /sys/fs/cgroup): OSError. Returns the cgroup's directory.

    Under saturation the kernel's CFS shares CPU between siblings by weight, so a
    cgroup with a hundred times an instance's weight gets the CPU it needs first, even
    among the instances' cgroups (a lab host's agent is)."""
    rel = name.strip("/")
    if not rel or ".." in rel.split("/"):
        raise ValueError(f"cgroup {name!r}: give a path below the hierarchy's root")
    if (fs / "cgroup.controllers").exists():  # v2: the parents must hand the cpu controller down
        parent = fs
        for part in rel.split("/"):
            _enable_cpu(parent)
            parent = parent / part
            parent.mkdir(exist_ok=True)
        (parent / "cpu.weight").write_text(str(weight))
    else:
        parent = fs / "cpu" / rel
        parent.mkdir(parents=True, exist_ok=True)
        (parent / "cpu.shares").write_text(str(shares))
    (parent / "cgroup.procs").write_text(str(pid))
    return parent


def _enable_cpu(d: Path) -> None:
    if "cpu" not in (d / "cgroup.subtree_control").read_text().split():
        (d / "cgroup.subtree_control").write_text("+cpu")


def make_parent(
    name: str,
    pids_max: int,
    shares: int = 2,
    weight: int = 1,
    fs: Path = Path("/sys/fs/cgroup"),
) -> list[Path]:
    """After: the cgroup ``name`` (a path below the hierarchies' root, e.g. a cgroup
    parent given to dockerd) exists in the pids and cpu hierarchies with at most
    ``pids_max`` tasks, every descendant's together (pids is hierarchical in v1 and
    v2), and CPU weight ``shares`` (v1) or ``weight`` (v2). Already so: the same,
    the figures written again. Returns the directories written. Nothing may be
    written: OSError."""
    rel = name.strip("/")
    if not rel or ".." in rel.split("/"):
        raise ValueError(f"cgroup {name!r}: give a path below the hierarchy's root")
    if (fs / "cgroup.controllers").exists():
        parent = fs
        for part in rel.split("/"):
            for controller in ("cpu", "pids"):
                if controller not in (parent / "cgroup.subtree_control").read_text().split():
                    (parent / "cgroup.subtree_control").write_text(f"+{controller}")
            parent = parent / part
            parent.mkdir(exist_ok=True)
        (parent / "pids.max").write_text(str(pids_max))
        (parent / "cpu.weight").write_text(str(weight))
        return [parent]
    pids_dir, cpu_dir = fs / "pids" / rel, fs / "cpu" / rel
    for d in (pids_dir, cpu_dir):
        d.mkdir(parents=True, exist_ok=True)
    (pids_dir / "pids.max").write_text(str(pids_max))
    (cpu_dir / "cpu.shares").write_text(str(shares))
    return [pids_dir, cpu_dir]
