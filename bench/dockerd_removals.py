"""Does removing many running containers at once wedge this machine's dockerd?

Run as root:

    .venv/bin/python -m bench.dockerd_removals --rounds 40      # 20 containers a round
    .venv/bin/python -m bench.dockerd_removals --quick          # 1 round of each mode, 4

Debian 12's docker.io (20.10.24+dfsg1) carries the libnetwork lock-order deadlock
fixed upstream in October 2023 (moby/libnetwork#2679, moby/moby#46661): the store's
watchLoop holds the controller's lock and waits for a network's, while an
endpoint.Delete (a container's exit: handleContainerExit -> releaseNetwork ->
sandbox.Delete) holds the network's and blocks sending to the watchLoop. Once
it happens every inspect, rm and info queues behind them for good.

Each round starts ``--count`` busybox containers (``dockyard image build-demo``'s
rootfs, /sbin/init, ``--net=none`` as the agent makes them) on a private dockerd
(dockyard.lab.daemons), then removes them in one of three ways, the modes taking
turns round by round:

- concurrent: ``--count`` threads each ``remove_container(force=True)`` at once
  (what the agent's 16 step workers do when a stack or many instances go);
- serial: the same threads, each removal under one lock;
- stop+serial: ``--count`` concurrent ``stop`` calls, then the removals under one lock.

A round whose removals (and a following ``info`` + ``ps -a``) do not finish in
``--deadline`` s is a wedge: dockerd's goroutines are dumped (SIGUSR1; the file is
copied to ``--dumps``), that dockerd is killed by PID with its containerd, shims and
containers, and a fresh one started for the next round.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dockyard.lab.daemons import Dockerd  # noqa: E402
from dockyard.lab.procs import cmdline, run  # noqa: E402

IMAGE = "dockyard-bench-removals:1"
LABEL = "dockyard-bench-removals"
MODES = ("concurrent", "serial", "stop+serial")


class Wedged(Exception):
    """dockerd did not finish a round's calls within the deadline."""


@dataclass
class Tally:
    rounds: int = 0
    wedges: int = 0
    times: list[float] = field(default_factory=list)  # removal of --count, rounds that finished
    dumps: list[str] = field(default_factory=list)


# --- a private dockerd that can be thrown away when it wedges


class Daemon:
    def __init__(self, work: Path, rootfs: Path) -> None:
        self.work, self.rootfs = work, rootfs
        self.d: Dockerd | None = None
        self.api: docker.APIClient | None = None

    def start(self) -> docker.APIClient:
        tag = secrets.token_hex(3)
        root = self.work / f"dockerd-{tag}"
        root.mkdir()
        self.d = Dockerd(root, tag)
        self.d.start()
        # the SDK's timeout only frees the threads of a wedged round; the round's
        # deadline decides
        self.api = docker.APIClient(base_url=self.d.url, timeout=300, max_pool_size=64)
        self.api.import_image_from_file(
            str(self.rootfs), repository=IMAGE.split(":")[0], tag="1",
            changes=['CMD ["/sbin/init"]'],
        )  # fmt: skip
        return self.api

    def dump(self, dumps: Path) -> str:
        """SIGUSR1: dockerd writes goroutine-stacks-*.log into its exec root."""
        assert self.d is not None and self.d.proc is not None
        before = set(self.d.exec_root.glob("goroutine-stacks-*.log"))
        self.d.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            new = set(self.d.exec_root.glob("goroutine-stacks-*.log")) - before
            if new:
                time.sleep(0.5)  # let it finish writing
                src = new.pop()
                dumps.mkdir(parents=True, exist_ok=True)
                dest = dumps / f"{self.d.exec_root.name}-{src.name}"
                shutil.copy(src, dest)
                return str(dest)
            time.sleep(0.2)
        return "(no dump written)"

    def kill(self) -> None:
        """SIGKILL this dockerd, then its containerd and shims (their command lines
        name this dockerd's own exec root), then its containers (its cgroup parent)."""
        if self.d is None:
            return
        d, self.d = self.d, None
        if self.api is not None:
            self.api.close()
            self.api = None
        if d.proc is not None:
            d.proc.kill()
            d.proc.wait()
        for pid in _pids_naming(f"{d.exec_root}/"):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        d.stop()  # mounts and cgroups (and the containers in them)
        shutil.rmtree(d.exec_root, ignore_errors=True)
        shutil.rmtree(d.root, ignore_errors=True)

    def stop(self) -> None:
        """A clean stop of a dockerd that still answers; a kill otherwise."""
        if self.d is not None and self.api is not None:
            with suppress(Exception):
                _within(30, lambda: self.d.remove_containers() if self.d else None)
        self.kill()


def _pids_naming(marker: str) -> list[int]:
    me = os.getpid()
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and int(p.name) != me and marker in cmdline(int(p.name))
    ]


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a thread; Wedged if it has not returned after ``seconds``."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn).result(timeout=seconds)
    except TimeoutError as exc:
        raise Wedged(f"no answer in {seconds:.0f} s") from exc
    finally:
        pool.shutdown(wait=False)


# --- one round


def start_containers(api: docker.APIClient, count: int, round_no: int, veth: bool) -> list[str]:
    names = [f"dyk-rm-{round_no}-{i}" for i in range(count)]
    tag = secrets.token_hex(2)

    def one(name: str) -> None:
        api.create_container(IMAGE, name=name, labels={LABEL: ""},
                             host_config=api.create_host_config(network_mode="none"))  # fmt: skip
        api.start(name)
        if veth:  # as the agent plumbs eth0; the pair goes with the container's netns
            pid = api.inspect_container(name)["State"]["Pid"]
            host_end = f"dyr{tag}{name.rsplit('-', 1)[1]}"
            run("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0",
                "netns", str(pid))  # fmt: skip

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, names))
    running = {c["Names"][0].lstrip("/") for c in api.containers(filters={"label": LABEL})}
    missing = set(names) - running
    if missing:
        raise RuntimeError(f"containers not running after start: {sorted(missing)}")
    return names


def remove_all(api: docker.APIClient, names: list[str], mode: str, deadline: float) -> float:
    """Seconds for the removals of ``mode``; Wedged past ``deadline``."""
    lock = threading.Lock()
    serial = mode != "concurrent"

    def stop(name: str) -> None:
        api.stop(name, timeout=2)

    def remove(name: str) -> None:
        with lock if serial else nullcontext():
            api.remove_container(name, force=True, v=True)

    pool = ThreadPoolExecutor(len(names))
    start = time.monotonic()
    try:
        for phase in ([stop, remove] if mode == "stop+serial" else [remove]):
            futures = [pool.submit(phase, n) for n in names]
            left = deadline - (time.monotonic() - start)
            done, pending = wait(futures, timeout=max(left, 0))
            if pending:
                raise Wedged(f"{mode}: {len(pending)} of {len(names)} calls unanswered")
            for f in done:
                f.result()
        took = time.monotonic() - start
    finally:
        pool.shutdown(wait=False)
    # the exits are handled asynchronously: dockerd must still answer afterwards
    try:
        _within(deadline, lambda: (api.info(), api.containers(all=True)))
    except Wedged as exc:
        raise Wedged(f"{mode}: all removed in {took:.1f} s, then info/ps: {exc}") from exc
    return took


# --- rounds and the report


def run_rounds(daemon: Daemon, args: argparse.Namespace, tallies: dict[str, Tally]) -> None:
    """Modes take turns; no new round starts after ``--minutes``."""
    end = time.monotonic() + args.minutes * 60
    api = daemon.start()
    for i in range(args.rounds):
        for mode in args.modes:
            if time.monotonic() > end:
                print(f"--minutes {args.minutes:g} spent: stopping", flush=True)
                return
            api = one_round(daemon, api, mode, tallies[mode], args, i)


def one_round(daemon: Daemon, api: docker.APIClient, mode: str, tally: Tally,
              args: argparse.Namespace, i: int) -> docker.APIClient:  # fmt: skip
    try:
        names = _within(args.deadline, lambda: start_containers(api, args.count, i, args.veth))
    except Wedged:  # not a removal's fault: no tally, a fresh dockerd
        print(f"round {i} {mode}: dockerd stuck creating; goroutines: "
              f"{daemon.dump(args.dumps)}", flush=True)  # fmt: skip
        daemon.kill()
        return daemon.start()
    tally.rounds += 1
    try:
        took = remove_all(api, names, mode, args.deadline)
    except Wedged as exc:
        tally.wedges += 1
        dump = daemon.dump(args.dumps)
        tally.dumps.append(dump)
        print(f"round {i} {mode}: WEDGED ({exc}); goroutines: {dump}", flush=True)
        daemon.kill()
        return daemon.start()
    tally.times.append(took)
    print(f"round {i} {mode}: removed {args.count} in {took:.2f} s", flush=True)
    return api


def report(tallies: dict[str, Tally], count: int) -> None:
    print(f"\n{'mode':<12} {'rounds':>6} {'wedges':>6} {f'median s/{count}':>12} "
          f"{'min':>6} {'max':>6}")  # fmt: skip
    for mode, t in tallies.items():
        if t.times:
            med, lo, hi = statistics.median(t.times), min(t.times), max(t.times)
            figures = f"{med:>12.2f} {lo:>6.2f} {hi:>6.2f}"
        else:
            figures = f"{'-':>12} {'-':>6} {'-':>6}"
        print(f"{mode:<12} {t.rounds:>6} {t.wedges:>6} {figures}")
    for mode, t in tallies.items():
        for dump in t.dumps:
            print(f"dump ({mode}): {dump}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=10, help="rounds of each mode")
    p.add_argument("--count", type=int, default=20, help="containers a round")
    p.add_argument("--deadline", type=float, default=60, help="s until a round is a wedge")
    p.add_argument("--modes", default=",".join(MODES), help=f"some of {','.join(MODES)}")
    p.add_argument("--dumps", type=Path, default=Path("/tmp/dockerd-removals-dumps"),
                   help="where wedged dockerds' goroutine dumps are kept")  # fmt: skip
    p.add_argument("--veth", action="store_true",
                   help="an eth0 in each (veth, host end dyr*), as the agent")  # fmt: skip
    p.add_argument("--minutes", type=float, default=600, help="start no round after this")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of each, 4")
    args = p.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    if unknown := set(args.modes) - set(MODES):
        p.error(f"unknown mode(s) {sorted(unknown)}; choose from {','.join(MODES)}")
    if args.quick:
        args.rounds, args.count = 1, 4
    if os.geteuid() != 0:
        raise SystemExit("run as root: it starts a private dockerd")
    # a background job of a script ignores SIGINT: both stop the rounds, report, clean up
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    from dockyard.images import rootfs

    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="dyk-removals-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        image = rootfs.build(work / "rootfs.tar")
        daemon = Daemon(work, image)
        stack.callback(daemon.stop)
        tallies = {m: Tally() for m in args.modes}
        try:
            run_rounds(daemon, args, tallies)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        finally:
            report(tallies, args.count)


if __name__ == "__main__":
    main()
