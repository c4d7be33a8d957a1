"""Rolling a 6-replica stack on a 3-host lab: in-place and surge, against making its
instances afresh.

A 3-host lab (``dockyard lab up --build-host``); two stacks of ``--replicas`` instances of the demo
image serving http on port 8080 (busybox httpd started by a config file, checked by
an http health check): ``bench/inplace`` (in-place, max-unavailable 2) and
``bench/surge`` (surge, max-surge 2, max-unavailable 0). Each round deploys a new
environment to both, in turn, and measures

- deploy: from the deploy's POST to its status "succeeded" (the server's view);
- serving: (in-place only, whose IPs stay) until every member answers http with the
  new release's page, from a probe on the datacenter switch;
- lowest ready: the fewest ready members sampled every 0.2 s during the deploy;

- push: a commit (a Dockerfile FROM the demo image adding /etc/version) pushed to a
  `git daemon` on the lab's switch and its webhook posted as GitHub signs it, until
  every in-place member serves the new build (the hook auto-deploys; the build host is
  the lab's third host, --builds on its reserved last core), with the build's own
  split (clone, build, push);

and, as the baseline in the same run, ``--replicas`` plain instances of the same image
and flavor created at once until every one is ACTIVE (what the deploy's rebuilds cost
when nothing else is in the way).

    sudo .venv/bin/python -m bench.deploy [--rounds 3] [--replicas 6]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dockyard.lab import lab as labs
from dockyard.lab.procs import free_port, wait_for

RC_LOCAL = """#!/bin/sh
mkdir -p /www && echo "$APP_MODE-$(cat /etc/version 2>/dev/null || echo none)" > /www/index.html
httpd -p 8080 -h /www
"""
SECRET = "bench-deploy-secret-0123"
CHECK = {"kind": "http", "port": 8080, "path": "/index.html", "interval_s": 1}
# run in the probe's namespace: when every IP serves the text, prints the (system-wide)
# monotonic clock and exits
SERVING = r"""
import sys, time, urllib.request
want, ips = sys.argv[1], sys.argv[2:]
left = set(ips)
while left:
    for ip in sorted(left):
        try:
            with urllib.request.urlopen(f"http://{ip}:8080/index.html", timeout=1) as r:
                if r.read().decode().strip() == want:
                    left.discard(ip)
        except OSError:
            pass
    time.sleep(0.05)
print(time.monotonic())
"""


def stack_body(name: str, replicas: int, surge: bool) -> dict[str, Any]:
    budget = {"strategy": "surge", "max_surge": "2", "max_unavailable": "0"} if surge else {
        "strategy": "in-place", "max_unavailable": "2"}  # fmt: skip
    return {
        "name": name, "image": "demo", "flavor": "small", "network": "lab",
        "replicas": replicas, "env": {"APP_MODE": "r0"}, "health_check": CHECK,
        "files": [{"path": "/etc/rc.local", "content": RC_LOCAL, "mode": 0o755}],
        "progress_deadline_s": 120, **budget,
    }  # fmt: skip


def show(lab: labs.Lab, stack: str) -> Any:
    return lab.api("GET", f"/apps/bench/stacks/{stack}")


def settled(lab: labs.Lab, stack: str, replicas: int) -> bool:
    st = show(lab, stack)
    done = st["deploy"] is None or st["deploy"]["status"] != "running"
    return bool(done and st["ready"] == replicas)


class Lowest:
    """The fewest ready members seen while a deploy runs."""

    def __init__(self, lab: labs.Lab, stack: str) -> None:
        self.lab, self.stack, self.low = lab, stack, 10**6
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.low = min(self.low, show(self.lab, self.stack)["ready"])
            self.stop.wait(0.2)

    def end(self) -> int:
        self.stop.set()
        self.thread.join(30)
        return self.low


class Serving:
    """From the probe's namespace: when every one of ``ips`` serves ``want``."""

    def __init__(self, probe_ns: str, want: str, ips: list[str]) -> None:
        poll = ["nsenter", f"--net=/run/netns/{probe_ns}", sys.executable, "-c", SERVING, want]
        self.proc = subprocess.Popen([*poll, *ips], stdout=subprocess.PIPE, text=True)

    def seconds_after(self, t0: float) -> float:
        out, _ = self.proc.communicate(timeout=300)
        return float(out.strip()) - t0


def wait_deployed(lab: labs.Lab, stack: str) -> None:
    def status() -> str:
        deploy = show(lab, stack)["deploy"]
        return "none" if deploy is None else str(deploy["status"])

    wait_for(lambda: status() != "running", 600, f"the deploy of {stack}", interval=0.1)
    if status() != "succeeded":
        raise labs.LabError(f"the deploy of {stack}: {show(lab, stack)['deploy']}")


def deploy_once(lab: labs.Lab, stack: str, want: str, env: str) -> dict[str, float]:
    ips = [m["ip"] for m in show(lab, stack)["instances"]]
    serving = Serving(lab.data["probe_ns"], want, ips) if stack == "inplace" else None
    t0 = time.monotonic()
    low = Lowest(lab, stack)
    lab.api("POST", f"/apps/bench/stacks/{stack}/deploys", {"env": {"APP_MODE": env}})
    wait_deployed(lab, stack)
    out = {"deploy": time.monotonic() - t0, "lowest ready": float(low.end())}
    if serving is not None:
        out["serving"] = serving.seconds_after(t0)
    return out


def create_baseline(lab: labs.Lab, replicas: int, round_no: int) -> float:
    names = [f"plain{round_no}-{i}" for i in range(replicas)]
    t0 = time.monotonic()
    for n in names:
        lab.api("POST", "/instances", {"name": n, "image": "demo", "flavor": "small",
                                        "network": "lab"})  # fmt: skip

    def active() -> bool:
        rows = [i for i in lab.api("GET", "/instances") if i["name"] in names]
        return len(rows) == replicas and all(i["status"] == "ACTIVE" for i in rows)

    wait_for(active, 600, "the plain instances", interval=0.1)
    took = time.monotonic() - t0
    for n in names:
        lab.api("DELETE", f"/instances/{n}")
    wait_for(lambda: not [i for i in lab.api("GET", "/instances") if i["name"] in names], 300,
             "the plain instances to go")  # fmt: skip
    return took


GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid",
           "PATH": "/usr/bin:/bin"}  # fmt: skip


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True)
    if done.returncode:
        raise labs.LabError(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


class Repo:
    """A repository served by `git daemon` on the lab's switch (where build hosts reach),
    and a working copy the bench commits in; stopped by its PID."""

    def __init__(self, lab: labs.Lab, base: Path) -> None:
        self.base, self.port = base, free_port()
        self.work = base / "work"
        git(base, "init", "-q", "--bare", "-b", "main", "app.git")
        git(base, "init", "-q", "-b", "main", "work")
        addr = lab.data["switch_ip"]
        self.url = f"git://{addr}:{self.port}/app.git"
        self.daemon = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}",
             f"--listen={addr}", f"--port={self.port}", str(base)],  # fmt: skip
            env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def commit(self, files: dict[str, str]) -> str:
        for rel, text in files.items():
            (self.work / rel).write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", "bench")
        git(self.work, "push", "-q", "-f", str(self.base / "app.git"), "HEAD:refs/heads/main")
        return git(self.work, "rev-parse", "HEAD")

    def stop(self) -> None:
        self.daemon.terminate()
        self.daemon.wait(10)


def demo_ref(lab: labs.Lab) -> str:
    """The demo image as the build host's dockerd holds it (pulled by digest for a
    member there): the Dockerfile builds FROM it without a pull."""
    out = subprocess.run(
        ["docker", "-H", lab.hosts[-1].docker_host, "image", "ls", "--digests", "--format",
         "{{.Repository}}@{{.Digest}}"], capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return next(ref for ref in out if "demo" in ref and "@sha256:" in ref)


def push_once(lab: labs.Lab, repo: Repo, r: int, env: str) -> dict[str, float]:
    """A commit pushed and signed as GitHub does, until every in-place member serves it."""
    ips = [m["ip"] for m in show(lab, "inplace")["instances"]]
    sha = repo.commit({"Dockerfile": f"FROM {demo_ref(lab)}\nCOPY version /etc/version\n",
                       "version": f"v{r}\n"})  # fmt: skip
    serving = Serving(lab.data["probe_ns"], f"{env}-v{r}", ips)
    body = json.dumps({"ref": "refs/heads/main", "after": sha, "pusher": {"name": "bench"}})
    mac = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    t0 = time.monotonic()
    started = lab.api("POST", "/apps/bench/hooks/git", None, content=body, headers={
        "content-type": "application/json", "x-github-event": "push",
        "x-hub-signature-256": f"sha256={mac}"})  # fmt: skip
    (build_id,) = started["builds"]
    took = serving.seconds_after(t0)
    b = lab.api("GET", f"/builds/{build_id}")
    if b["status"] != "succeeded":
        raise labs.LabError(f"build {build_id}: {b['status']} {b['reason']}")
    wait_deployed(lab, "inplace")
    return {"serving": took, **{k: float(v) for k, v in b["seconds"].items()}}


def run(lab: labs.Lab, rounds: int, replicas: int, repo: Repo) -> dict[str, list[float]]:
    lab.api("POST", "/apps", {"name": "bench"})
    for stack, surge in (("inplace", False), ("surge", True)):
        lab.api("POST", "/apps/bench/stacks", stack_body(stack, replicas, surge))
    wait_for(lambda: all(settled(lab, s, replicas) for s in ("inplace", "surge")), 600,
             "both stacks ready")  # fmt: skip
    lab.api("POST", "/apps/bench/hooks", {"repo": repo.url, "branch": "main", "stack": "inplace",
                                          "auto_deploy": True, "secret": SECRET})  # fmt: skip
    got: dict[str, list[float]] = {}
    version = "none"
    for r in range(1, rounds + 1):
        got.setdefault("create afresh", []).append(create_baseline(lab, replicas, r))
        for stack in ("inplace", "surge"):
            figures = deploy_once(lab, stack, f"r{r}-{version}", f"r{r}")
            for k, v in figures.items():
                got.setdefault(f"{stack} {k}", []).append(v)
        for k, v in push_once(lab, repo, r, f"r{r}").items():
            got.setdefault(f"push {k}", []).append(v)
        version = f"v{r}"
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in got.items()), flush=True)
    return got


def report(got: dict[str, list[float]], replicas: int, rounds: int) -> None:
    base = statistics.median(got["create afresh"])
    print(f"\n{replicas} replicas on 3 lab hosts, {rounds} rounds (median; ratio to creating "
          f"{replicas} instances afresh, {base:.1f} s)")  # fmt: skip
    for k, v in got.items():
        med = statistics.median(v)
        ratio = "" if "lowest" in k or k == "create afresh" else f"  {med / base:.2f}x"
        unit = "" if "lowest" in k else " s"
        print(f"  {k:<24}{med:>8.1f}{unit}  (min {min(v):.1f}, max {max(v):.1f}){ratio}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--replicas", type=int, default=6)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="dyk-bench-deploy-"))
    lab = labs.up(state, 3, ["az1"], host_down_after=20, build_host=True)
    repo = Repo(lab, Path(tempfile.mkdtemp(prefix="dyk-bench-git-")))
    try:
        got = run(lab, args.rounds, args.replicas, repo)
    finally:
        repo.stop()
        shutil.rmtree(repo.base, ignore_errors=True)
        labs.down(state)  # keeps only the logs
    report(got, args.replicas, args.rounds)


if __name__ == "__main__":
    main()
