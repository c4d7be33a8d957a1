"""Enrolment: hosts joining with a one-time token, and leaving (``host remove``).

admin: POST /join-tokens ──► issue_join_token   (hash stored, expires, unused)
host:  POST /join {token} ──► trade_join_token   (used once) ──► agent token
admin: DELETE /hosts/NAME ──► remove_host        (refused while anything lives there;
                                                  a host that never registered: its tokens)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from dockyard.db import models as m
from dockyard.db.identity import hash_token, issue_agent_token, new_token
from dockyard.errors import Conflict, Forbidden, NotFound, Unauthorized
from dockyard.model.enrolment import HostRemoved, Joined, JoinTokenCreate, JoinTokenCreated

ASK_AGAIN = "ask an admin for a new token with `dockyard host add {host}`"


def issue_join_token(s: Session, req: JoinTokenCreate, ca_hash: str | None) -> JoinTokenCreated:
    token = "dyj_" + new_token().removeprefix("dy_")
    expires = m.now() + timedelta(seconds=req.expires_in)
    s.add(
        m.JoinToken(
            token_hash=hash_token(token),
            host_name=req.host,
            availability_zone=req.availability_zone,
            expires_at=expires,
        )
    )
    s.flush()
    return JoinTokenCreated(
        host=req.host,
        availability_zone=req.availability_zone,
        token=token,
        expires_at=expires,
        ca_hash=ca_hash,
    )


def trade_join_token(s: Session, token: str) -> Joined:
    """The host's agent token for a join token that is known, unexpired and unused.

    The conditional UPDATE marks the token used: of two trades at once, one wins
    (the row's lock on PostgreSQL, the write lock on SQLite) and the other is refused.
    """
    row = s.scalar(select(m.JoinToken).where(m.JoinToken.token_hash == hash_token(token)))
    if row is None:
        raise Unauthorized(
            "the join token is not known (mistyped, or its host was removed); "
            + ASK_AGAIN.format(host="NAME")
        )
    ask = ASK_AGAIN.format(host=row.host_name)
    if row.used_at is not None:
        raise Forbidden(
            f"this join token was already used at {row.used_at:%Y-%m-%d %H:%M:%S} UTC; a join "
            f"token works once. A host that joined keeps its credential in its state dir; "
            f"otherwise {ask}"
        )
    at = m.now()
    if row.expires_at <= at:
        raise Unauthorized(
            f"the join token expired at {row.expires_at:%Y-%m-%d %H:%M:%S} UTC; {ask}"
        )
    won = s.execute(
        update(m.JoinToken)
        .where(m.JoinToken.id == row.id, m.JoinToken.used_at.is_(None))
        .values(used_at=at)
        .returning(m.JoinToken.id)
    ).first()
    if won is None:
        raise Forbidden(f"this join token was just used by another join; {ask}")
    # a host being removed meanwhile waits for this, or this for it (row lock)
    s.scalar(select(m.Host).where(m.Host.name == row.host_name).with_for_update())
    # a re-joined host (reinstalled, or its credential leaked) keeps only the new one
    s.execute(delete(m.Token).where(m.Token.host_name == row.host_name))
    agent = issue_agent_token(s, row.host_name)
    _set_zone(s, row.host_name, row.availability_zone)
    return Joined(host=row.host_name, availability_zone=row.availability_zone, token=agent)


def _set_zone(s: Session, host: str, zone: str) -> None:
    """A host that registered before (a re-join) takes the zone of its new token."""
    s.execute(update(m.Host).where(m.Host.name == host).values(availability_zone=zone))


def remove_host(s: Session, name: str) -> HostRemoved:
    """Remove the host and revoke its agent and join tokens; refused (409) while
    instances or named volumes live there. A host that traded its join token but
    never registered (or never joined) has only credentials: they are revoked.
    404 only when there is neither a host nor a credential of that name."""
    row = s.scalar(select(m.Host).where(m.Host.name == name).with_for_update())
    if row is not None:
        _refuse_while_used(s, row)
        s.execute(update(m.Instance).where(m.Instance.host_id == row.id).values(host_id=None))
        s.execute(delete(m.CoreClaim).where(m.CoreClaim.host_id == row.id))
    agents = _count(s, m.Token.id, m.Token.host_name == name)
    joins = _count(s, m.JoinToken.id, m.JoinToken.host_name == name, m.JoinToken.used_at.is_(None))
    s.execute(delete(m.Token).where(m.Token.host_name == name))
    s.execute(delete(m.JoinToken).where(m.JoinToken.host_name == name))
    if row is None and not agents and not joins:
        raise NotFound(
            f"host {name!r} is not registered and holds no credential; see `dockyard host list`"
        )
    if row is not None:
        s.delete(row)
    s.flush()
    return HostRemoved(
        host=name,
        registered=row is not None,
        agent_tokens_revoked=agents,
        join_tokens_revoked=joins,
        detail=_removed(name, row is not None, agents, joins),
    )


def _count(s: Session, column: Any, *where: Any) -> int:
    return s.scalar(select(func.count(column)).where(*where)) or 0


def _refuse_while_used(s: Session, row: m.Host) -> None:
    live = s.scalars(
        select(m.Instance.name)
        .where(m.Instance.host_id == row.id, m.Instance.deleted_at.is_(None))
        .order_by(m.Instance.name)
    ).all()
    volumes = s.scalars(
        select(m.Volume.name).where(m.Volume.host_id == row.id).order_by(m.Volume.name)
    ).all()
    if live or volumes:
        held = [f"instances {', '.join(live)}"] if live else []
        held += [f"volumes {', '.join(volumes)}"] if volumes else []
        raise Conflict(
            f"host {row.name!r} still holds {' and '.join(held)}; delete them first "
            "(`dockyard server delete NAME`, `dockyard volume delete NAME`), then remove the host",
            instances=list(live),
            volumes=list(volumes),
        )


def _removed(name: str, registered: bool, agents: int, joins: int) -> str:
    revoked = [f"{agents} agent token{'s' * (agents != 1)}"] if agents else []
    revoked += [f"{joins} unused join token{'s' * (joins != 1)}"] if joins else []
    what = " and ".join(revoked) or "no credential"
    if registered:
        return f"removed host {name}; revoked {what}"
    never = "joined but never registered" if agents else "never joined"
    return f"host {name} {never}: no host to remove; revoked {what}"
