"""A new host joins the cloud: pin the server's CA, trade the one-time join token
for this host's own agent token, and keep both in the agent's state dir.

    dockyard-agent --join URL --token T --ca-hash sha256:H
      1. GET URL/v1/ca                   unverified: nothing is trusted yet
      2. pki.check_ca(ca, H)             a CA that is not pinned ──► JoinError, nothing saved
      3. POST URL/v1/join {token}        verified against that CA from here on
      4. save(state_dir)                 ca.pem, agent.token (0600), enrolment.json
    later starts: saved(state_dir)       the same credential, no token needed
    metrics_certificate(...)             a CSR signed by the server: metrics.key (0600),
                                         metrics.pem, for the host's /metrics (HTTPS)

This is the one place that joins, so the lab and scripts/setup join as real
hosts do (``join`` is called by compute/cli.py).
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from dockyard import pki
from dockyard.errors import PermanentError

ENROLMENT, CA_FILE, TOKEN_FILE = "enrolment.json", "ca.pem", "agent.token"


class JoinError(PermanentError):
    """The join was refused or could not be checked; nothing was saved."""


@dataclass(frozen=True)
class Enrolment:
    """What a joined host keeps: whom it trusts and who it is."""

    server: str
    host: str
    availability_zone: str
    token: str
    ca_file: Path


def join(url: str, token: str, ca_hash: str, state_dir: Path, timeout: float = 30) -> Enrolment:
    """Join the cloud at ``url``; after it, ``saved(state_dir)`` returns the enrolment."""
    url = url.rstrip("/")
    if not url.startswith("https://"):
        raise JoinError(f"--join {url}: give the server's https:// URL, as `host add` printed it")
    if not ca_hash.lower().startswith("sha256:"):
        raise JoinError(f"--ca-hash {ca_hash!r}: write sha256:<hex>, as `host add` printed it")
    ca = _fetch_ca(url, timeout)
    try:
        ca = pki.check_ca(ca, ca_hash)  # that one certificate, nothing else it came with
    except pki.PinMismatch as exc:
        raise JoinError(str(exc)) from exc
    context = ssl.create_default_context(cadata=ca.decode())
    answer = _trade(url, token, context, timeout)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    enrolment = Enrolment(
        server=url,
        host=str(answer["host"]),
        availability_zone=str(answer["availability_zone"]),
        token=str(answer["token"]),
        ca_file=state_dir / CA_FILE,
    )
    _save(state_dir, enrolment, ca)
    return enrolment


def saved(state_dir: Path) -> Enrolment | None:
    """The enrolment of an earlier join, or None when this host never joined."""
    path = state_dir / ENROLMENT
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Enrolment(
        server=data["server"],
        host=data["host"],
        availability_zone=data["availability_zone"],
        token=(state_dir / TOKEN_FILE).read_text().strip(),
        ca_file=state_dir / CA_FILE,
    )


def _fetch_ca(url: str, timeout: float) -> bytes:
    try:
        # unverified on purpose: the pin, not the TLS handshake, decides whether to trust it
        r = httpx.get(f"{url}/v1/ca", verify=False, timeout=timeout)
    except httpx.HTTPError as exc:
        raise JoinError(f"cannot reach {url} to fetch its CA: {exc}") from exc
    if r.status_code != 200:
        raise JoinError(f"{url} did not hand out its CA (HTTP {r.status_code}): {_detail(r)}")
    return r.content


def _trade(url: str, token: str, context: ssl.SSLContext, timeout: float) -> dict[str, object]:
    try:
        r = httpx.post(f"{url}/v1/join", json={"token": token}, verify=context, timeout=timeout)
    except httpx.HTTPError as exc:
        raise JoinError(f"cannot join at {url}: {exc}") from exc
    if r.status_code != 200:
        raise JoinError(f"the server refused the join: {_detail(r)}", status=r.status_code)
    body: dict[str, object] = r.json()
    return body


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", r.text[:300]))
    except ValueError:
        return r.text[:300]


def _save(state_dir: Path, enrolment: Enrolment, ca: bytes) -> None:
    """The credential 0600; enrolment.json last, so a host that has it is fully joined."""
    enrolment.ca_file.write_bytes(ca)
    _write_secret(state_dir / TOKEN_FILE, enrolment.token + "\n")
    record = {k: v for k, v in asdict(enrolment).items() if k in ("server", "host")}
    record["availability_zone"] = enrolment.availability_zone
    _write_secret(state_dir / ENROLMENT, json.dumps(record, indent=2) + "\n")


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


METRICS_CERT, METRICS_KEY = "metrics.pem", "metrics.key"


def metrics_certificate(
    server: str, token: str, host: str, ca_file: Path, state_dir: Path, timeout: float = 15
) -> str:
    """Ask the server to sign this host's /metrics certificate; after it, STATE_DIR holds
    metrics.key (0600) and metrics.pem. Returns the address the server saw this host
    call from (the certificate's IP: what Prometheus is to scrape). Refused or
    unreachable: JoinError, nothing saved."""
    key, csr = pki.host_key_and_csr(host)
    context = ssl.create_default_context(cafile=str(ca_file))
    url = f"{server.rstrip('/')}/v1/agent/hosts/{host}/metrics-certificate"
    try:
        r = httpx.post(
            url,
            json={"csr": csr.decode()},
            headers={"Authorization": f"Bearer {token}"},
            verify=context,
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise JoinError(f"cannot reach {server} for a /metrics certificate: {exc}") from exc
    if r.status_code != 200:
        raise JoinError(f"no /metrics certificate: {_detail(r)}", status=r.status_code)
    body = r.json()
    pki.write_secret(state_dir / METRICS_KEY, key)
    (state_dir / METRICS_CERT).write_text(str(body["certificate"]))
    return str(body["address"])
