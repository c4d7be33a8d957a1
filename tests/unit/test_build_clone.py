"""The build's clone (compute/clone.py) against a real git daemon on loopback."""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.compute.clone import CloneFailed, GitCloner, Stopped, dockerfile_in
from dockyard.model.builds import BuildOrder
from tests.gitserver import GitServer, git, git_server


@pytest.fixture(scope="module")
def server():
    with git_server() as s:
        yield s


def _order(url: str, ref: str = "main", commit: str | None = None) -> BuildOrder:
    return BuildOrder(
        id="b1", repo=url, ref=ref, commit=commit, dockerfile="Dockerfile",
        push_repo="127.0.0.1:5000/p/app", tag_date="20261126", memory_mb=256,
        timeout_seconds=60,
    )  # fmt: skip


def _clone(order: BuildOrder, dest: Path, lines: list[str] | None = None) -> str:
    out = lines if lines is not None else []
    return GitCloner(limit=30).clone(order, dest, threading.Event(), out.append)


def test_the_orders_commit_is_checked_out_exactly_even_when_the_branch_moved_on(
    server: GitServer, tmp_path
):
    first = server.commit("app", {"Dockerfile": "FROM base\n", "v": "1"})
    server.commit("app", {"Dockerfile": "FROM base\n", "v": "2"})  # main moved on
    head = _clone(_order(server.url("app"), commit=first), tmp_path / "c")
    assert head == first and (tmp_path / "c" / "v").read_text() == "1"


def test_without_a_commit_the_ref_is_resolved(server: GitServer, tmp_path):
    last = server.commit("app2", {"Dockerfile": "FROM base\n"}, branch="release")
    assert _clone(_order(server.url("app2"), ref="release"), tmp_path / "c") == last


def test_a_commit_that_does_not_exist_fails_clearly(server: GitServer, tmp_path):
    server.commit("app3", {"Dockerfile": "FROM base\n"})
    missing = "1" * 40
    with pytest.raises(CloneFailed, match=f"commit {missing} is not in .*app3.git"):
        _clone(_order(server.url("app3"), commit=missing), tmp_path / "c")


def test_a_branch_that_does_not_exist_fails_naming_it(server: GitServer, tmp_path):
    server.commit("app4", {"Dockerfile": "FROM base\n"})
    with pytest.raises(CloneFailed, match=r"git fetch of .*app4.git \(nope\) failed"):
        _clone(_order(server.url("app4"), ref="nope"), tmp_path / "c")


@pytest.mark.parametrize(
    "url", ["file:///etc", "/etc", "ext::sh -c touch% /tmp/pwned", "git://x/y --upload-pack=z"]
)
def test_urls_that_reach_the_host_are_refused_before_git_runs(url, tmp_path):
    order = _order("git://x/y").model_copy(update={"repo": url})
    with pytest.raises(CloneFailed, match="is not an https://"):
        _clone(order, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_git_itself_refuses_protocols_outside_the_allowed_ones(server: GitServer, tmp_path):
    """Even a URL that passed the check cannot lead git to file:// (a redirect, a
    submodule): GIT_ALLOW_PROTOCOL and protocol.file.allow=never."""
    from dockyard.compute.clone import _Runner

    bare = server.base / "app.git"
    run = _Runner("git", tmp_path, threading.Event(), lambda _: None, time.monotonic() + 30,
                  tmp_path)  # fmt: skip
    run("init", "-q", ".", what="init")
    assert not run.ok("fetch", "--", f"file://{bare}", "main")
    assert any("not allowed" in line or "unsupported" in line for line in run.tail), run.tail


def test_a_stop_kills_the_clone(server: GitServer, tmp_path):
    halt = threading.Event()
    halt.set()
    with pytest.raises(Stopped):
        GitCloner().clone(_order(server.url("app")), tmp_path / "c", halt, lambda _: None)


def test_the_dockerfile_must_resolve_inside_the_clone(server: GitServer, tmp_path):
    server.commit("links", {"Dockerfile": "->/etc/passwd", "sub/Dockerfile": "FROM base\n",
                            "up": "->../..", "in": "->sub/Dockerfile"})  # fmt: skip
    root = tmp_path / "c"
    _clone(_order(server.url("links")), root)
    assert dockerfile_in(root, "sub/Dockerfile") == "sub/Dockerfile"
    assert dockerfile_in(root, "in") == "sub/Dockerfile"
    with pytest.raises(CloneFailed, match="symbolic link out of the repository"):
        dockerfile_in(root, "Dockerfile")
    with pytest.raises(CloneFailed, match="symbolic link out of the repository"):
        dockerfile_in(root, "up/etc/passwd")
    with pytest.raises(CloneFailed, match="no Dockerfile at nothere"):
        dockerfile_in(root, "nothere")


def test_a_token_in_the_url_never_reaches_the_log_or_the_error(server: GitServer, tmp_path):
    from dockyard.compute.clone import shown

    assert shown("https://ci:s3cret@git.example/a.git") == "https://git.example/a.git"
    assert shown("git://git.example/a.git") == "git://git.example/a.git"
    url = f"http://ci:s3cret@127.0.0.1:{server.port}/none.git"  # no http server there
    lines: list[str] = []
    with pytest.raises(CloneFailed) as err:
        _clone(_order(url), tmp_path / "c", lines)
    assert lines and "s3cret" not in err.value.detail and "s3cret" not in "\n".join(lines)
    assert "127.0.0.1" in err.value.detail  # it still says where


@pytest.fixture
def auth_logger() -> Iterator[tuple[int, list[str | None]]]:
    """An http server on loopback that asks for a login (401) and notes each
    request's Authorization header: what a tenant's git host would learn."""
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1], seen
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_agents_netrc_and_stored_credentials_never_go_to_a_tenants_git_host(
    auth_logger, tmp_path, monkeypatch
):
    port, seen = auth_logger
    home = tmp_path / "root-home"  # the agent's HOME, with root's logins in it
    home.mkdir()
    (home / ".netrc").write_text("machine 127.0.0.1 login root password hunter2\n")
    (home / ".git-credentials").write_text(f"http://root:hunter2@127.0.0.1:{port}\n")
    (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")
    for name in (".netrc", ".git-credentials"):
        os.chmod(home / name, 0o600)
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(CloneFailed):
        _clone(_order(f"http://127.0.0.1:{port}/tenant/app.git"), tmp_path / "c")
    assert seen, "git never asked the tenant's host"
    assert seen == [None] * len(seen), seen  # no Authorization header, ever


def test_ssh_gets_no_key_config_or_known_hosts_of_the_agents_user(tmp_path, monkeypatch):
    """ssh reads ~/.ssh from the password database, not $HOME: only its options keep
    root's keys, agent, config and known hosts away from a host the tenant names."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "ssh-called"
    fake = bin_dir / "ssh"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$HOME" "$@" > {record}\nexit 255\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/root-agent.sock")
    with pytest.raises(CloneFailed):
        _clone(_order("ssh://git@127.0.0.1:1/tenant/app.git"), tmp_path / "c")
    home, *argv = record.read_text().splitlines()
    assert home != os.path.expanduser("~root") and "dockyard-git-home-" in home
    assert argv[:2] == ["-F", "/dev/null"]  # no ~/.ssh/config, no /etc/ssh/ssh_config
    for option in ("IdentitiesOnly=yes", "IdentityFile=none", "IdentityAgent=none",
                   "BatchMode=yes", f"UserKnownHostsFile={home}/known_hosts"):  # fmt: skip
        assert option in argv, argv
    assert not Path(home).exists()  # the clone's HOME goes with it


def test_a_line_without_end_from_git_is_cut_and_held_bounded(tmp_path):
    """A git (or a server speaking through it) that prints 16 MiB without a newline:
    the agent holds and logs at most one cut line of it (64 KiB)."""
    fake = tmp_path / "git"
    fake.write_text("#!/bin/sh\nhead -c 16777216 /dev/zero | tr '\\0' x\nexit 1\n")
    fake.chmod(0o755)
    lines: list[str] = []
    with pytest.raises(CloneFailed) as err:
        GitCloner(limit=30, git=str(fake)).clone(
            _order("git://127.0.0.1/app.git"), tmp_path / "c", threading.Event(), lines.append
        )
    assert lines and max(len(line) for line in lines) <= 64 << 10
    assert sum(len(line) for line in lines) == 16 << 20  # all of it logged, in pieces
    assert len(err.value.detail) <= 1500


@pytest.mark.parametrize(
    "dockerfile",
    [
        "FROM base\nADD http://127.0.0.1:8787/v1/agent/x /x\n",
        "FROM base\nadd --chown=1 https://169.254.169.254/latest /m\n",
        "FROM base\nADD \\\n    http://10.0.0.1/secret /s\n",
        "# escape=`\nFROM base\nADD `\n  http://10.0.0.1/secret /s\n",
    ],
)
def test_a_dockerfile_that_adds_from_a_url_is_refused(dockerfile, tmp_path):
    (tmp_path / "Dockerfile").write_text(dockerfile)
    with pytest.raises(CloneFailed, match="ADDs from a URL"):
        dockerfile_in(tmp_path, "Dockerfile")


def test_a_dockerfile_that_adds_files_of_its_own_repository_is_fine(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM base\nADD app.tar /srv/\nCOPY . /src\n")
    assert dockerfile_in(tmp_path, "Dockerfile") == "Dockerfile"


# a pushed commit must be on the branch its hook follows ------------------------------


def _checked_out_nothing(dest: Path) -> bool:
    return sorted(p.name for p in dest.iterdir()) == [".git"]


def test_a_commit_of_another_branch_named_with_the_followed_branch_is_refused(
    server: GitServer, tmp_path
):
    """A push (or a git host's bug) naming main with a commit only on another branch:
    nothing of it is checked out, and the error says what to do."""
    server.commit("other", {"Dockerfile": "FROM base\n", "v": "reviewed"})
    unreviewed = server.commit("other", {"Dockerfile": "FROM evil\n"}, branch="wip", base="main")
    dest = tmp_path / "c"
    with pytest.raises(CloneFailed) as err:
        _clone(_order(server.url("other"), ref="main", commit=unreviewed), dest)
    assert f"commit {unreviewed} is not in the history of branch main" in err.value.detail
    assert "push it to main" in err.value.detail
    assert _checked_out_nothing(dest)


def test_an_ancestor_of_the_branchs_tip_builds(server: GitServer, tmp_path):
    first = server.commit("hist", {"Dockerfile": "FROM base\n", "v": "1"})
    for v in "234":
        server.commit("hist", {"Dockerfile": "FROM base\n", "v": v})
    lines: list[str] = []
    assert _clone(_order(server.url("hist"), commit=first), tmp_path / "c", lines) == first
    assert (tmp_path / "c" / "v").read_text() == "1"
    assert any(f"commit {first} is on branch main" in line for line in lines), lines


@pytest.mark.parametrize("rewrite", ["onto-an-older-commit", "a-new-root"])
def test_a_commit_force_pushed_off_the_branch_is_refused(server: GitServer, tmp_path, rewrite):
    name = f"forced-{rewrite}"
    base = server.commit(name, {"Dockerfile": "FROM base\n", "v": "1"})
    dropped = server.commit(name, {"Dockerfile": "FROM base\n", "v": "2"})
    files = {"Dockerfile": "FROM base\n", "v": "3"}
    if rewrite == "a-new-root":
        server.commit(name, files, root=True)  # push -f of an unrelated history
    else:
        server.commit(name, files, base=base)  # push -f: main is base + this one
    dest = tmp_path / "c"
    with pytest.raises(CloneFailed, match=f"commit {dropped} is not in the history of branch"):
        _clone(_order(server.url(name), commit=dropped), dest)
    assert _checked_out_nothing(dest)


def test_the_tip_builds_from_one_fetched_commit(server: GitServer, tmp_path):
    """The usual push: the tip. Only it is fetched, not the branch's history."""
    for v in "123":
        tip = server.commit("tip", {"Dockerfile": "FROM base\n", "v": v})
    dest = tmp_path / "c"
    assert _clone(_order(server.url("tip"), commit=tip), dest) == tip
    assert git(dest, "rev-list", "--count", "HEAD") == "1"


def test_a_commit_beyond_the_depth_cap_is_refused_saying_the_cap(server: GitServer, tmp_path):
    old = server.commit("deep", {"Dockerfile": "FROM base\n", "v": "0"})
    for v in "12345":
        server.commit("deep", {"Dockerfile": "FROM base\n", "v": v})
    dest = tmp_path / "c"
    cloner = GitCloner(limit=30, depths=(1, 2, 4))
    with pytest.raises(CloneFailed, match=f"commit {old} is not within the newest 4 commits"):
        cloner.clone(_order(server.url("deep"), commit=old), dest, threading.Event(), print)
    assert _checked_out_nothing(dest)
    # within the cap: found on a later round
    within = git(server.base / "deep.git", "rev-parse", "main~3")
    assert cloner.clone(_order(server.url("deep"), commit=within), tmp_path / "d",
                        threading.Event(), print) == within  # fmt: skip


def test_a_commit_named_with_a_ref_that_is_no_branch_is_refused(server: GitServer, tmp_path):
    sha = server.commit("notag", {"Dockerfile": "FROM base\n"})
    with pytest.raises(CloneFailed, match=r"git fetch of branch v1\.0 of .*notag.git failed"):
        _clone(_order(server.url("notag"), ref="v1.0", commit=sha), tmp_path / "c")

