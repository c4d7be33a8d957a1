"""A real git server for build tests: bare repositories under a temp dir served by
``git daemon`` on 127.0.0.1 (git://), started and stopped by its PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dockyard.lab.procs import free_port, stop_proc, wait_for

_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": os.environ.get("HOME", "/root"),
}


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=_ENV, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


@dataclass
class GitServer:
    base: Path
    port: int
    address: str = "127.0.0.1"

    def url(self, name: str) -> str:
        return f"git://{self.address}:{self.port}/{name}.git"

    def commit(
        self,
        name: str,
        files: dict[str, str],
        branch: str = "main",
        base: str | None = None,
        root: bool = False,
    ) -> str:
        """A commit of exactly ``files`` (its whole tree) on ``branch`` of the repository
        ``name`` (made if missing), pushed to the served bare repository; returns its id.
        A value starting with '->' is a symbolic link to the rest.

        Its parent: the branch's tip (none for a branch that does not exist yet);
        ``base`` (a branch or commit of the repository) instead: a new branch from
        there, or the branch rewritten onto it; ``root``: no parent, the branch's
        history replaced. Anything but a commit on the tip is force-pushed."""
        bare = self.base / f"{name}.git"
        if not bare.exists():
            git(self.base, "init", "-q", "--bare", "-b", branch, str(bare))
        with tempfile.TemporaryDirectory(dir=self.base) as tmp:
            work = Path(tmp)
            git(work, "init", "-q", "-b", branch)
            parent = None if root else _parent(work, bare, base or branch, base is None)
            if parent is not None:  # the index stays empty: the tree is ``files`` only
                git(work, "update-ref", f"refs/heads/{branch}", parent)
            for rel, text in files.items():
                path = work / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                if text.startswith("->"):
                    path.symlink_to(text[2:])
                else:
                    path.write_text(text)
            git(work, "add", "-A")
            git(work, "commit", "-q", "--allow-empty", "-m", "test")
            git(work, "push", "-q", "-f", str(bare), f"HEAD:refs/heads/{branch}")
            return git(work, "rev-parse", "HEAD")


def _parent(work: Path, bare: Path, rev: str, may_be_missing: bool) -> str | None:
    """``rev`` (a branch or a commit of ``bare``) fetched into ``work``; its id."""
    git(work, "fetch", "-q", str(bare), "+refs/heads/*:refs/remotes/served/*")
    for name in (f"refs/remotes/served/{rev}", rev):
        out = subprocess.run(
            ["git", "rev-parse", "-q", "--verify", f"{name}^{{commit}}"],
            cwd=work, env=_ENV, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode == 0:
            return out.stdout.strip()
    assert may_be_missing, f"{bare.name} has no branch or commit {rev!r}"
    return None


@contextmanager
def git_server(address: str = "127.0.0.1") -> Iterator[GitServer]:
    """``address``: where git daemon listens (a lab's switch address, for its hosts)."""
    if shutil.which("git") is None:
        raise RuntimeError("git is not installed (scripts/packages.sh)")
    base = Path(tempfile.mkdtemp(prefix="dyk-git-"))
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}",
         f"--listen={address}", f"--port={port}", str(base)],  # fmt: skip
        env=_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _listening(address, port), 10, "git daemon")
        yield GitServer(base, port, address)
    finally:
        stop_proc(proc, timeout=5)
        shutil.rmtree(base, ignore_errors=True)


def _listening(address: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex((address, port)) == 0
