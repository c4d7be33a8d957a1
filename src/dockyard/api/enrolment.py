"""Enrolment: join tokens (admin), the join itself (the token is the only credential),
the CA a joining host pins, and removing a host.

The CA is served without authentication on purpose: a joining host has no
credential yet, and it trusts the CA only if its hash matches the one in the
join command an admin gave it (docs/architecture.md, "Joining a host").
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response

from dockyard import pki
from dockyard.api.deps import Admin, Db, Key, Watch
from dockyard.db import enrolment
from dockyard.errors import NotFound
from dockyard.model.enrolment import (
    HostRemoved,
    Joined,
    JoinRequest,
    JoinTokenCreate,
    JoinTokenCreated,
)

router = APIRouter(tags=["enrolment"])


def _ca_file(request: Request) -> Path | None:
    ca: Path | None = request.app.state.ca_file
    return ca


@router.post("/join-tokens", status_code=201)
def create_join_token(
    body: JoinTokenCreate, request: Request, db: Db, _: Admin
) -> JoinTokenCreated:
    """A one-time token with which host ``host`` joins (``dockyard host add``)."""
    ca = _ca_file(request)
    ca_hash = pki.ca_hash(ca.read_bytes()) if ca is not None else None
    with db.session() as s:
        return enrolment.issue_join_token(s, body, ca_hash)


@router.post("/join")
def join(body: JoinRequest, db: Db) -> Joined:
    """Trade a join token (once) for the host's own agent token."""
    with db.session() as s:
        return enrolment.trade_join_token(s, body.token)


@router.get(
    "/ca",
    response_class=Response,
    responses={200: {"content": {"application/x-pem-file": {}}}},
)
def ca(request: Request) -> Response:
    """The CA certificate (PEM) that signed this server's certificate."""
    path = _ca_file(request)
    if path is None:
        raise NotFound(
            "this server was started without a CA (dockyard-server --tls-ca); hosts cannot "
            "join it over TLS"
        )
    return Response(path.read_bytes(), media_type="application/x-pem-file")


@router.delete("/hosts/{name}")
def remove_host(name: Key, db: Db, watch: Watch, _: Admin) -> HostRemoved:
    """Refused (409, naming them) while instances or volumes live on the host. A host
    that joined but never registered has only its agent token: it is revoked (404
    when there is neither host nor credential)."""
    with db.session() as s:
        removed = enrolment.remove_host(s, name)
    watch.notify(name)  # its agent's long poll ends, and its next call is refused
    return removed
