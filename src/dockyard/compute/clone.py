"""A build's clone: git, run safely on a repository a user names.

    GitCloner.clone(order, dest)
      git init dest                         a repository of its own, made here
      order names a commit and a branch (a push; `build start --ref SHA`):
        git fetch --depth D -- URL refs/heads/BRANCH    D = 1, 100, 1000, 5000 (the cap)
        git merge-base --is-ancestor COMMIT FETCH_HEAD  on the branch as fetched now: on
                                                        it, stop; the whole history came
                                                        and it is not there: refused;
                                                        else the next D; past the cap:
                                                        refused, saying the cap
      order names a commit only (ref == commit, orders of older servers):
        git fetch --depth 1 -- URL COMMIT
      order names a ref only (a branch's tip, a tag: `build start --ref NAME`):
        git fetch --depth 1 -- URL REF
      git checkout --detach COMMIT|FETCH_HEAD, then HEAD verified: the 40-hex id reported

A pushed commit is built only if it is on the branch its hook follows: the tip of
that branch or an ancestor of it, in the repository as fetched now (a commit of
another branch, or one a force push took off the branch, is refused before anything
is checked out). The commit is never fetched by id then: only the branch's history
is, deeper each round, so a push of the tip (the usual case) fetches one commit's
tree and a huge repository is never fetched whole (at most the cap's commits). An
order's ref beside a commit must be a branch of the repository (refs/heads/REF; a
tag or any other name is refused): "on the branch" has no meaning for a tag. An
order naming a ref alone builds what it names now (a branch's tip is on the branch
by definition; a tag is what a member asked for by hand).

What keeps a hostile repository or URL from the host: no shell (argv, ``--`` before
the URL), GIT_ALLOW_PROTOCOL=http:https:git:ssh (no file://, no ext:: helper) and
``protocol.file.allow=never``, no system or global git config (no credential helpers,
filters or hooks of the host; ``core.hooksPath=/dev/null``), no terminal prompt, no
submodules, a time limit, and the whole process group killed on a stop.

Nothing of the agent's user reaches a host the tenant chose: each clone runs with a
HOME of its own (an empty temporary directory, XDG_CONFIG_HOME there too: no
~/.netrc, ~/.git-credentials or ~/.config/git of root's), an empty credential.helper,
no askpass program, and ssh with ``-F /dev/null`` (no ~/.ssh/config, no
/etc/ssh/ssh_config: ssh reads ~/.ssh from the password database, not $HOME), no
identity file and no agent, batch mode, and known hosts in that HOME (first seen,
accepted; never root's). git's output is read in lines of at most BUILD_LINE_MAX
bytes (a longer one is cut), so no line it prints can fill the agent's memory.
``dockerfile_in`` refuses a Dockerfile path (or a symbolic link on it) that leads out
of the clone, and a Dockerfile that ADDs from a URL (dockerd fetches it itself, from
the host's network namespace: loopback and the management network included).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from dockyard.compute.driver import BUILD_LINE_MAX
from dockyard.errors import PermanentError
from dockyard.model.builds import BuildOrder

CLONE_LIMIT = 600.0  # seconds a clone may take, within the build's own time
BRANCH_DEPTHS = (1, 100, 1000, 5000)  # a branch's commits fetched, round by round, to find
# an order's commit on it; the last is the cap: a commit further back is refused
_SCHEMES = ("https://", "http://", "git://", "ssh://")
_REF = re.compile(r"^[A-Za-z0-9._/-]+$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_ESCAPE = re.compile(r"^#\s*escape\s*=\s*`", re.IGNORECASE | re.MULTILINE)
DOCKERFILE_MAX = 1 << 20  # bytes: a Dockerfile is read whole to check it


class CloneFailed(PermanentError):
    """The clone, or the check-out of the order's commit, failed; says why."""


class Stopped(PermanentError):
    """A stop came (the order cancelled, its time up, the agent stopping)."""


class Cloner(Protocol):
    def clone(
        self, order: BuildOrder, dest: Path, halt: threading.Event, output: Callable[[str], None]
    ) -> str:
        """After: ``dest`` (made, empty) holds the order's commit checked out; returns its
        40-hex id. git's output goes to ``output``. CloneFailed says why not; Stopped
        when ``halt`` was set meanwhile (git killed)."""
        ...


def git_env(home: Path) -> dict[str, str]:
    """git's whole environment: nothing inherited but PATH; ``home`` (empty, the
    clone's own) stands in for the agent's HOME, so no credential of the host's user
    goes to the repository's host."""
    ssh = (
        "ssh -F /dev/null -o IdentitiesOnly=yes -o IdentityFile=none -o IdentityAgent=none "
        "-o BatchMode=yes -o StrictHostKeyChecking=accept-new "
        f"-o UserKnownHostsFile={home}/known_hosts -o GlobalKnownHostsFile=/dev/null"
    )
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
        "LC_ALL": "C",
        "GIT_ALLOW_PROTOCOL": "http:https:git:ssh",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_SSH_COMMAND": ssh,
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "SSH_ASKPASS_REQUIRE": "never",
    }


def shown(url: str) -> str:
    """The URL without a user or token in it: what the build's log and errors show."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}" if sep else url


def check_order(order: BuildOrder) -> None:
    """What git will be given: a URL of an allowed scheme, a plain ref, a full id."""
    if not order.repo.startswith(_SCHEMES) or any(c.isspace() for c in order.repo):
        raise CloneFailed(
            f"the repository {shown(order.repo)!r} is not an https://, http://, git:// or "
            "ssh:// URL"
        )
    if not _REF.match(order.ref) or order.ref.startswith("-") or ".." in order.ref:
        raise CloneFailed(f"the ref {order.ref!r} is not a plain branch, tag or commit name")
    if order.commit is not None and not _SHA.match(order.commit):
        raise CloneFailed(f"the commit {order.commit!r} is not a 40-hex commit id")


class GitCloner:
    def __init__(
        self, limit: float = CLONE_LIMIT, git: str = "git", depths: tuple[int, ...] = BRANCH_DEPTHS
    ) -> None:
        self.limit, self.git, self.depths = limit, git, depths

    def clone(
        self, order: BuildOrder, dest: Path, halt: threading.Event, output: Callable[[str], None]
    ) -> str:
        check_order(order)
        with tempfile.TemporaryDirectory(prefix="dockyard-git-home-") as home:
            run = _Runner(self.git, dest, halt, output, time.monotonic() + self.limit, Path(home))
            return self._clone(order, dest, run)

    def _clone(self, order: BuildOrder, dest: Path, run: _Runner) -> str:
        if shown(order.repo) != order.repo:
            run.secrets.append((order.repo, shown(order.repo)))
        dest.mkdir(parents=True, exist_ok=True)
        run("init", "-q", ".", what="git init")
        where = f"{shown(order.repo)} ({order.ref})"
        if order.commit is not None and order.ref != order.commit:
            self._on_branch(order.repo, order.ref, order.commit, run)
            run("checkout", "-q", "--detach", order.commit, what="git checkout")
        elif order.commit is not None:  # no branch named: the commit as named
            if not run.ok("fetch", "--depth", "1", "--no-tags", "--no-recurse-submodules",
                          "--", order.repo, order.commit):  # fmt: skip
                raise CloneFailed(f"commit {order.commit} is not in {where}, or its server "
                                  "refuses a fetch by id: build a branch or a tag")  # fmt: skip
            run("checkout", "-q", "--detach", order.commit, what="git checkout")
        else:
            run("fetch", "--depth", "1", "--no-tags", "--no-recurse-submodules", "--",
                order.repo, order.ref, what=f"git fetch of {where}")  # fmt: skip
            run("checkout", "-q", "--detach", "FETCH_HEAD", what="git checkout")
        head = run.out("rev-parse", "--verify", "HEAD^{commit}").strip()
        if not _SHA.match(head) or (order.commit is not None and head != order.commit):
            raise CloneFailed(f"the clone's HEAD is {head!r}, not the commit asked for")
        return head

    def _on_branch(self, repo: str, branch: str, commit: str, run: _Runner) -> None:
        """``commit`` is on ``branch`` as the repository has it now (its tip or an
        ancestor), fetched with its history to at most the last of ``depths`` commits
        deep; CloneFailed if not. Only the branch is fetched, never the commit by id."""
        where = f"branch {branch} of {shown(repo)}"
        for depth in self.depths:
            run("fetch", "--depth", str(depth), "--no-tags", "--no-recurse-submodules", "--",
                repo, f"refs/heads/{branch}", what=f"git fetch of {where}")  # fmt: skip
            if run.quiet("merge-base", "--is-ancestor", commit, "FETCH_HEAD"):
                run.output(f"commit {commit} is on {where} (within {depth} commits of its tip)")
                return
            if run.out("rev-parse", "--is-shallow-repository").strip() == "false":
                tip = run.out("rev-parse", "--verify", "FETCH_HEAD^{commit}").strip()
                raise CloneFailed(
                    f"commit {commit} is not in the history of {where} (its tip is now "
                    f"{tip[:12]}): builds follow the hook's branch; push it to {branch} "
                    f"(merge it there), or build a commit that is on {branch}"
                )
        raise CloneFailed(
            f"commit {commit} is not within the newest {self.depths[-1]} commits of {where}: "
            f"builds look that far back only; push it to {branch} again (on top of its "
            f"tip), or build a newer commit of {branch}"
        )


def dockerfile_in(root: Path, rel: str) -> str:
    """``rel`` as a path inside the clone ``root`` (symbolic links followed, and
    refused if they lead out of it), naming a regular file."""
    if rel.startswith("/") or ".." in rel.split("/"):
        raise CloneFailed(f"the Dockerfile path {rel!r} is not relative to the repository")
    top = root.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(top):
        raise CloneFailed(f"the Dockerfile {rel} is a symbolic link out of the repository")
    if not target.is_file():
        raise CloneFailed(f"the commit has no Dockerfile at {rel}")
    if target.stat().st_size > DOCKERFILE_MAX:
        raise CloneFailed(f"the Dockerfile {rel} is over {DOCKERFILE_MAX >> 10} KiB")
    _no_remote_add(target.read_text("utf-8", "replace"), rel)
    return str(target.relative_to(top))


def _no_remote_add(text: str, rel: str) -> None:
    """Refuse ``ADD URL``: dockerd would fetch it from the host's own network (its
    loopback, the management network), not from the build's."""
    escape = "`" if _ESCAPE.search(text.partition("\n\n")[0]) else "\\"
    joined = re.sub(re.escape(escape) + r"[ \t]*\r?\n", " ", text)
    for line in joined.splitlines():
        words = line.split()
        if words and words[0].upper() == "ADD" and any("://" in w for w in words[1:]):
            raise CloneFailed(
                f"the Dockerfile {rel} ADDs from a URL ({line.strip()[:200]!r}): builds "
                "do not fetch URLs; RUN a download on a network your operator gives "
                "builds, or commit the file"
            )


class _Runner:
    """git commands in ``dest``, each killed (its process group) on a stop or past
    the clone's deadline."""

    def __init__(
        self,
        git: str,
        dest: Path,
        halt: threading.Event,
        output: Callable[[str], None],
        deadline: float,
        home: Path,
    ) -> None:
        self.git, self.dest, self.halt, self.output = git, dest, halt, output
        self.deadline, self.home = deadline, home
        self.tail: deque[str] = deque(maxlen=8)
        self.secrets: list[tuple[str, str]] = []  # (what git may print, what the log shows)

    def hide(self, line: str) -> str:
        for secret, instead in self.secrets:
            line = line.replace(secret, instead)
        return line

    def __call__(self, *args: str, what: str) -> None:
        if self._run(args) != 0:
            said = "; ".join(self.tail) or "no output"
            raise CloneFailed(f"{what} failed: {said}"[:1500])

    def ok(self, *args: str) -> bool:
        return self._run(args) == 0

    def quiet(self, *args: str) -> bool:
        """Whether git succeeded, its output kept out of the build's log."""
        return self._run(args, echo=False) == 0

    def out(self, *args: str) -> str:
        lines: list[str] = []
        if self._run(args, lines.append, echo=False) != 0:
            raise CloneFailed(f"git {args[0]} failed: {'; '.join(self.tail)}")
        return "\n".join(lines)

    def _run(
        self, args: tuple[str, ...], keep: Callable[[str], None] | None = None, echo: bool = True
    ) -> int:
        if self.halt.is_set():
            raise Stopped("the clone was stopped")
        cmd = [self.git, "-c", "protocol.file.allow=never", "-c", "core.hooksPath=/dev/null",
               "-c", "submodule.recurse=false", "-c", "credential.helper=", *args]  # fmt: skip
        self.tail.clear()
        proc = subprocess.Popen(
            cmd,
            cwd=self.dest,
            env=git_env(self.home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed whole
        )
        assert proc.stdout is not None
        reader = threading.Thread(target=self._read, args=(proc, keep, echo), daemon=True)
        reader.start()
        while proc.poll() is None:
            if self.halt.wait(0.05) or time.monotonic() > self.deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                reader.join(5)
                if self.halt.is_set():
                    raise Stopped("the clone was stopped")
                raise CloneFailed(f"the clone took longer than its limit (git {args[0]} killed)")
        reader.join(5)
        return proc.returncode

    def _read(
        self, proc: subprocess.Popen[bytes], keep: Callable[[str], None] | None, echo: bool
    ) -> None:
        out = proc.stdout
        assert out is not None
        for raw in iter(lambda: out.readline(BUILD_LINE_MAX), b""):  # a longer line: cut
            line = self.hide(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if keep is not None:
                keep(line)
            self.tail.append(line)
            if echo:
                self.output(line)
