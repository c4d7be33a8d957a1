"""A real dockyard-server over HTTPS: the CLI and the agent verify it, and a host
joins it as `dockyard host add` says."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from dockyard import model, pki
from dockyard.cli.client import Api, CliError
from dockyard.compute import cli as agent_cli
from dockyard.compute import join
from dockyard.compute.client import ServerClient
from dockyard.errors import TemporaryError
from tests.api.server_process import server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def https(tmp_path_factory):
    state = tmp_path_factory.mktemp("tls-server")
    tls = pki.ensure_server_cert(state / "tls", ["127.0.0.1", "localhost"])
    args = ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-ca", str(tls.ca)]
    with server(state, f"sqlite:///{state}/dockyard.db", *args, ca=tls.ca) as srv:
        srv.ca = tls.ca
        yield srv


def _host_add(https, name, az="nova"):
    """`dockyard host add` as an admin runs it: the printed command's three values."""
    env = {
        **os.environ,
        "DOCKYARD_URL": https.url,
        "DOCKYARD_TOKEN": https.admin,
        "DOCKYARD_CA": str(https.ca),
    }
    out = subprocess.run(
        [sys.executable, "-m", "dockyard.cli.main", "host", "add", name, "--az", az],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    words = next(line for line in out.stdout.splitlines() if "scripts/setup" in line).split()
    values = dict(zip(words[1::2], words[2::2], strict=False))
    return values["--join"], values["--token"], values["--ca-hash"]


def test_the_cli_verifies_the_server_against_dockyard_ca(https):
    assert Api(https.url, https.admin, ca=str(https.ca)).get("/hosts") == []


def test_the_cli_refuses_a_server_whose_cert_is_not_from_the_ca(https, tmp_path):
    other, _ = pki.ensure_ca(tmp_path / "other")
    with pytest.raises(CliError, match="not who it claims.*DOCKYARD_CA"):
        Api(https.url, https.admin, ca=str(other)).get("/hosts")


def test_the_cli_refuses_it_against_the_system_store_too(https, monkeypatch):
    monkeypatch.delenv("DOCKYARD_CA", raising=False)
    with pytest.raises(CliError, match="not who it claims.*system's CA store"):
        Api(https.url, https.admin).get("/hosts")


def test_host_add_prints_a_join_command_with_the_cas_pin(https):
    url, token, pin = _host_add(https, "printed")
    assert url == https.url and token.startswith("dyj_")
    assert pin == pki.ca_hash(https.ca.read_bytes())


def test_a_host_joins_and_its_agent_works_verified(https, tmp_path):
    url, token, pin = _host_add(https, "h2", az="az2")
    enrolment = join.join(url, token, pin, tmp_path / "agent")
    assert (enrolment.host, enrolment.availability_zone) == ("h2", "az2")
    for name in ("agent.token", "enrolment.json"):
        assert stat.S_IMODE((tmp_path / "agent" / name).stat().st_mode) == 0o600
    assert enrolment.ca_file.read_bytes() == https.ca.read_bytes()
    assert join.saved(tmp_path / "agent") == enrolment
    client = ServerClient(enrolment.server, enrolment.token, "h2", enrolment.ca_file)
    req = model.HostRegister(
        name="h2",
        availability_zone=enrolment.availability_zone,
        cores=2,
        memory_mb=1024,
        disk_gb=10,
    )
    assert client.register(req).availability_zone == "az2"
    client.heartbeat()
    client.close()
    with pytest.raises(join.JoinError, match="already used.*dockyard host add h2"):
        join.join(url, token, pin, tmp_path / "again")


def test_a_ca_that_does_not_match_the_pin_is_refused_and_nothing_is_saved(https, tmp_path):
    url, token, _ = _host_add(https, "h3")
    other, _ = pki.ensure_ca(tmp_path / "other")
    with pytest.raises(join.JoinError, match="not the server the join command was made for"):
        join.join(url, token, pki.ca_hash(other.read_bytes()), tmp_path / "agent")
    assert not (tmp_path / "agent").exists()
    # the token was not spent on a server the host does not trust
    assert join.join(url, token, pki.ca_hash(https.ca.read_bytes()), tmp_path / "agent")


def test_the_agent_refuses_a_server_whose_cert_is_not_from_its_ca(https, tmp_path):
    other, _ = pki.ensure_ca(tmp_path / "other")
    client = ServerClient(https.url, https.admin, "h9", other)
    with pytest.raises(TemporaryError, match="CERTIFICATE_VERIFY_FAILED"):
        client.heartbeat()
    client.close()


def test_dockyard_agent_joins_once_then_starts_from_its_saved_credential(https, tmp_path):
    url, token, pin = _host_add(https, "h4", az="az1")
    state = ["--state-dir", str(tmp_path / "agent")]
    p = agent_cli._parser()
    first = p.parse_args(["--join", url, "--token", token, "--ca-hash", pin, *state])
    cfg, ca = agent_cli._enrol(p, first, agent_cli._config(p, first))
    assert (cfg.server, cfg.host, cfg.availability_zone) == (url, "h4", "az1")
    # a restart (the systemd unit runs the same command again): no second trade
    again, _ = agent_cli._enrol(p, first, agent_cli._config(p, first))
    later = p.parse_args(state)
    after, ca_after = agent_cli._enrol(p, later, agent_cli._config(p, later))
    assert again.token == after.token == cfg.token and ca_after == ca
    client = ServerClient(after.server, after.token, after.host, ca_after)
    client.register(model.HostRegister(name="h4", cores=2, memory_mb=1024, disk_gb=10))
    client.close()


def test_dockyard_agent_says_what_is_wrong_with_a_refused_join(https, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dockyard.compute.cli",
            "--join",
            https.url,
            "--token",
            "dyj_x",
            "--ca-hash",
            pki.ca_hash(https.ca.read_bytes()),
            "--state-dir",
            str(tmp_path / "a"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "the join token is not known" in out.stderr and "dockyard host add" in out.stderr
    assert not (tmp_path / "a" / "enrolment.json").exists()
    assert "Traceback" not in out.stderr
