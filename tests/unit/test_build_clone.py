"""The build's clone (compute/clone.py) against a real git daemon on loopback."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dockyard.compute.clone import CloneFailed, GitCloner, Stopped, dockerfile_in
from dockyard.model.builds import BuildOrder
from tests.gitserver import GitServer, git_server


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
    run = _Runner("git", tmp_path, threading.Event(), lambda _: None, time.monotonic() + 30)
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
