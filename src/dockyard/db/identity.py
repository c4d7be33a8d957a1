"""Projects, users and bearer tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import models as m
from dockyard.errors import Conflict, Forbidden, NotFound, Unauthorized


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user in a project with a role, or an agent for a host."""

    name: str
    role: str  # admin, member, reader, agent, monitoring (read-only: db/monitoring.py)
    project_id: str | None = None
    user_id: str | None = None
    host_name: str | None = None
    token_id: str | None = None  # the token this request came with

    @property
    def is_admin(self) -> bool:
        return self.role == model.Role.admin


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


MONITORING = "@monitoring"  # the monitoring token's host_name: no host name starts with @


def new_token() -> str:
    return "dy_" + secrets.token_urlsafe(32)


def authenticate(s: Session, token: str) -> Principal:
    """Who sends ``token``: one indexed lookup, on every request.

    Nothing is cached, so a revoked token, an expired one or a disabled user's
    is refused by every server from the moment the change commits.
    """
    row = s.scalar(select(m.Token).where(m.Token.token_hash == hash_token(token)))
    if row is None:
        raise Unauthorized("the token is not known (revoked, or mistyped); check DOCKYARD_TOKEN")
    if row.expires_at is not None and row.expires_at <= m.now():
        raise Unauthorized(
            f"the token expired at {row.expires_at:%Y-%m-%d %H:%M:%S} UTC; make a new one with "
            "`dockyard token create` using a token that still works, or ask an admin for one",
            expired_at=row.expires_at.isoformat() + "Z",
        )
    if row.host_name == MONITORING:
        return Principal(name="monitoring", role="monitoring", token_id=row.id)
    if row.host_name is not None:
        return Principal(
            name=f"agent:{row.host_name}", role="agent", host_name=row.host_name, token_id=row.id
        )
    assert row.user is not None
    u = row.user
    if u.disabled:
        raise Forbidden(
            f"user {u.name!r} is disabled, and so are its tokens; ask an admin "
            f"(`dockyard user enable {u.name}`)"
        )
    return Principal(
        name=u.name, role=u.role, project_id=u.project_id, user_id=u.id, token_id=row.id
    )


def create_project(s: Session, name: str) -> model.Project:
    if s.scalar(select(m.Project).where(m.Project.name == name)):
        raise Conflict(f"project {name!r} already exists; choose another name")
    row = m.Project(name=name)
    s.add(row)
    s.flush()
    return model.Project(id=row.id, name=row.name)


def list_projects(s: Session) -> list[model.Project]:
    rows = s.scalars(select(m.Project).order_by(m.Project.name))
    return [model.Project(id=r.id, name=r.name) for r in rows]


def project_by_name(s: Session, name: str) -> m.Project:
    row = s.scalar(select(m.Project).where(m.Project.name == name))
    if row is None:
        raise NotFound(f"project {name!r} does not exist; see `dockyard project list`")
    return row


def create_user(s: Session, req: model.UserCreate) -> tuple[model.User, str]:
    project = project_by_name(s, req.project)
    if s.scalar(select(m.User).where(m.User.name == req.name)):
        raise Conflict(f"user {req.name!r} already exists; choose another name")
    user = m.User(name=req.name, project_id=project.id, role=req.role.value)
    s.add(user)
    s.flush()
    token = issue_user_token(s, user.id)
    return _user(user, project.name), token


def list_users(s: Session) -> list[model.User]:
    rows = s.scalars(select(m.User).order_by(m.User.name))
    return [_user(r, r.project.name) for r in rows]


def issue_user_token(s: Session, user_id: str, expires_at: datetime | None = None) -> str:
    token = new_token()
    s.add(m.Token(token_hash=hash_token(token), user_id=user_id, expires_at=expires_at))
    return token


def issue_agent_token(s: Session, host_name: str) -> str:
    token = new_token()
    s.add(m.Token(token_hash=hash_token(token), host_name=host_name))
    return token


def list_tokens(s: Session, who: Principal) -> list[model.TokenInfo]:
    q = select(m.Token).order_by(m.Token.created_at)
    if not who.is_admin:
        q = q.where(m.Token.user_id == who.user_id)
    return [
        model.TokenInfo(
            id=t.id,
            user=t.user.name if t.user else None,
            host=t.host_name,
            created_at=t.created_at,
            expires_at=t.expires_at,
        )
        for t in s.scalars(q)
    ]


def new_own_token(s: Session, who: Principal, req: model.TokenCreate) -> model.TokenCreated:
    """A new token for the caller, as long as the one it came with still stands.

    The caller's token row is locked: a revocation that committed meanwhile (on
    any server) is seen here, and one in flight waits for this insert.
    """
    assert who.user_id is not None
    mine = s.execute(
        select(m.Token.id, m.Token.expires_at).where(m.Token.id == who.token_id).with_for_update()
    ).first()
    if mine is None:
        raise Unauthorized("the token is not known (revoked, or mistyped); check DOCKYARD_TOKEN")
    expires = None if req.expires_in is None else m.now() + timedelta(seconds=req.expires_in)
    if mine.expires_at is not None and (expires is None or expires > mine.expires_at):
        expires = mine.expires_at  # a token never outlives the one that made it
    token = issue_user_token(s, who.user_id, expires)
    s.flush()
    row = s.scalar(select(m.Token).where(m.Token.token_hash == hash_token(token)))
    assert row is not None
    return model.TokenCreated(id=row.id, token=token, user=who.name, expires_at=expires)


def revoke_token(s: Session, who: Principal, token_id: str) -> None:
    """Members revoke their own tokens; admins any, agents' included."""
    row = s.get(m.Token, token_id)
    if row is None or (not who.is_admin and row.user_id != who.user_id):
        raise NotFound(f"token {token_id} does not exist; see `dockyard token list`")
    s.delete(row)


def bootstrap(s: Session) -> str | None:
    """Create the admin project and user on an empty database; return its token."""
    if s.scalar(select(m.User).limit(1)) is not None:
        return None
    project = m.Project(name="admin")
    s.add(project)
    s.flush()
    user = m.User(name="admin", project_id=project.id, role=model.Role.admin.value)
    s.add(user)
    s.flush()
    try:
        return issue_user_token(s, user.id)
    except IntegrityError as exc:  # pragma: no cover - two servers bootstrapping at once
        raise Conflict("the database is being initialised by another server") from exc


def update_user(s: Session, who: Principal, name: str, req: model.UserUpdate) -> model.User:
    """Disable, enable or change the role of a user; nobody locks themselves out."""
    row = s.scalar(select(m.User).where(m.User.name == name).with_for_update(of=m.User))
    if row is None:
        raise NotFound(f"user {name!r} does not exist; see `dockyard user list`")
    if row.id == who.user_id and (req.disabled or req.role not in (None, model.Role.admin)):
        raise Conflict("you cannot disable or demote yourself; ask another admin")
    if req.disabled is not None:
        row.disabled = req.disabled
    if req.role is not None:
        row.role = req.role.value
    s.flush()
    return _user(row, row.project.name)


def _user(row: m.User, project: str) -> model.User:
    return model.User(
        id=row.id, name=row.name, project=project, role=model.Role(row.role), disabled=row.disabled
    )
