"""`dockyard image import`, `image list|delete` and `registry add|list|images` against a
real dockyard-server started with --registry and a real docker-registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dockyard import pki
from dockyard.images import distribution, logins
from tests.api.server_process import server
from tests.registry.util import rootfs


def _cli(url: str, token: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKYARD_URL": url, "DOCKYARD_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "dockyard.cli.main", *argv], env=env, capture_output=True, text=True
    )


def test_import_list_registry_images_and_delete(
    primary: distribution.RegistryConfig, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    args = ("--registry", primary.url, "--registry-root", str(primary.root))
    with server(state, f"sqlite:///{state}/d.db", *args) as srv:
        run = lambda *a: _cli(srv.url, srv.admin, *a)  # noqa: E731
        tar = rootfs(tmp_path / "r.tar")
        done = run("image", "import", "web", "--rootfs", str(tar))
        assert done.returncode == 0, done.stderr
        listed = run("image", "list")
        assert "REPOSITORY:TAG" in listed.stdout and "DIGEST" in listed.stdout
        [row] = [line for line in listed.stdout.splitlines() if line.startswith("web")]
        digest = row.split()[-1]
        assert digest.startswith("sha256:")
        held = run("registry", "images")
        assert held.returncode == 0, held.stderr
        assert "REPOSITORY" in held.stdout and "PUSHED" in held.stdout and digest in held.stdout
        added = run("registry", "add", "--az", "az1", "https://198.18.7.1:5000")
        assert added.returncode == 0, added.stderr
        regs = run("registry", "list").stdout
        assert "primary" in regs and "az1" in regs and "pull-through cache" in regs
        bad = run("registry", "add", "--az", "az2", "ftp://x")
        assert bad.returncode == 1 and "url" in bad.stderr
        plain = run("registry", "add", "--az", "az2", "http://198.18.7.2:5000")
        assert plain.returncode == 1 and "plain http only on loopback" in plain.stderr
        assert run("image", "delete", "web").returncode == 0
        assert digest not in run("registry", "images").stdout


def test_registry_login_prints_the_login_and_a_docker_login_that_reads_stdin(
    secured: tuple[distribution.RegistryConfig, pki.ServerTls], tmp_path: Path
) -> None:
    cfg, tls = secured
    assert cfg.logins is not None
    state = tmp_path / "state"
    state.mkdir()
    args = ("--registry", cfg.url, "--registry-logins", str(cfg.logins))
    args += ("--registry-ca", str(tls.ca))
    with server(state, f"sqlite:///{state}/d.db", *args) as srv:
        done = _cli(srv.url, srv.admin, "registry", "login")
        assert done.returncode == 0, done.stderr
        password = logins.read(cfg.logins).server.password
        assert f"password: {password}" in done.stdout
        command = done.stdout.splitlines()[-1]
        assert command == (f"docker login {cfg.addr} --username {logins.SERVER} --password-stdin")
        assert password not in command  # ps would show it
        tar = rootfs(tmp_path / "r.tar")
        pushed = _cli(srv.url, srv.admin, "image", "import", "web", "--rootfs", str(tar))
        assert pushed.returncode == 0, pushed.stderr  # the server pushes with its login, over TLS
    assert password not in (state / "server.log").read_text()
