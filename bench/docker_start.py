"""Docker's own create + start of a container without Docker's network, two ways.

Run as root:

    .venv/bin/python -m bench.docker_start                # 5 rounds of 10 + 10 at once
    .venv/bin/python -m bench.docker_start --quick        # 1 round of 3

Both ways give the container a network namespace of its own with only ``lo`` (up),
which the agent then plumbs eth0 into:

- ``none``: ``HostConfig.NetworkMode=none``, what ``docker run --net=none`` does.
  libnetwork still makes a sandbox for it: a netns file under dockerd's exec root,
  and an OCI prestart hook that runs dockerd's own binary (``libnetwork-setkey``)
  inside every start to tell dockerd the new namespace.
- ``disabled``: the same plus ``Config.NetworkDisabled=true`` (the Engine API has it,
  the docker CLI has no flag for it): runc makes the namespace (and brings ``lo``
  up), libnetwork makes nothing. What the agent creates instances with.

On a private dockerd (``dockyard.lab.daemons.Dockerd``) with ``dockyard image
build-demo``'s busybox rootfs, the ways take turns: per round ``--count`` create +
start one after the other (each timed), then ``--count`` at once (wall time until
all started, and the CPU seconds dockerd with its containerd, the shims and the
bench's own client used meanwhile), then removal one at a time (not timed).
Prints medians, p90 and the ratio disabled / none.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peer import CpuMeter, docker_roles, p90  # noqa: E402
from dockyard.images import rootfs  # noqa: E402
from dockyard.lab.daemons import Dockerd  # noqa: E402

IMAGE = "dockyard-bench-start:1"
LABEL = "dockyard-bench-start"
WAYS: dict[str, dict[str, Any]] = {"none": {}, "disabled": {"network_disabled": True}}


class Starter:
    def __init__(self, d: Dockerd) -> None:
        self.d = d
        self.api = docker.APIClient(base_url=d.url, timeout=120, max_pool_size=64)

    def one(self, way: str) -> float:
        began = time.monotonic()
        host_config = self.api.create_host_config(network_mode="none")
        made = self.api.create_container(
            IMAGE, labels={LABEL: way}, host_config=host_config, **WAYS[way]
        )
        self.api.start(made["Id"])
        return time.monotonic() - began

    def burst(self, way: str, count: int) -> float:
        began = time.monotonic()
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda _: self.one(way), range(count)))
        return time.monotonic() - began

    def clean(self) -> None:
        for c in self.api.containers(all=True, filters={"label": LABEL}):
            self.api.remove_container(c["Id"], force=True)  # one at a time: see dockerd_removals

    def roles(self) -> dict[str, set[int]]:
        assert self.d.proc is not None
        return docker_roles(self.d.proc.pid, self.d.exec_root)


def measure(s: Starter, rounds: int, count: int) -> dict[str, dict[str, list[float]]]:
    out = {w: {"one": [], "burst": [], "cpu": []} for w in WAYS}
    for w in WAYS:  # warm-up: the image's first use, dockerd's first sandbox
        s.one(w)
    s.clean()
    for r in range(rounds):
        order = list(WAYS) if r % 2 == 0 else list(reversed(WAYS))
        for w in order:
            out[w]["one"] += [s.one(w) for _ in range(count)]
            s.clean()
            with CpuMeter(s.roles) as cpu:
                out[w]["burst"].append(s.burst(w, count))
            out[w]["cpu"].append(cpu.used["dockerd"] + cpu.used["shims"] + cpu.used["clients"])
            s.clean()
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    return out


def report(out: dict[str, dict[str, list[float]]], count: int) -> None:
    rows: list[tuple[str, Callable[[list[float]], float], str]] = [
        ("one create + start, median", statistics.median, "one"),
        ("one create + start, p90", p90, "one"),
        (f"{count} at once, median wall", statistics.median, "burst"),
        (f"{count} at once, CPU s (dockerd, shims, client)", statistics.median, "cpu"),
    ]
    print("| | none | disabled | disabled / none |\n|---|---|---|---|")
    for label, fn, key in rows:
        none, disabled = fn(out["none"][key]), fn(out["disabled"][key])
        unit = 1000 if key == "one" else 1
        fmt = "{:.1f} ms" if key == "one" else "{:.2f} s"
        print(f"| {label} | {fmt.format(none * unit)} | {fmt.format(disabled * unit)} "
              f"| {disabled / none:.2f}x |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="1 round of 3")
    args = ap.parse_args()
    rounds, count = (1, 3) if args.quick else (args.rounds, args.count)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dyk-start-")))
        d = Dockerd(work, secrets.token_hex(3))
        stack.callback(d.stop)
        d.start()
        s = Starter(d)
        stack.callback(s.clean)
        tar = rootfs.build(work / "rootfs.tar")
        s.api.import_image_from_file(str(tar), repository=IMAGE.split(":")[0], tag="1",
                                     changes=['CMD ["/sbin/init"]'])  # fmt: skip
        report(measure(s, rounds, count), count)


if __name__ == "__main__":
    main()
