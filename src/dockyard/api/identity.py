"""Projects, users and tokens.

Every handler opens its own session and builds its answer inside it, so the
commit runs before the answer (see api/catalog.py).
"""

from __future__ import annotations

from fastapi import APIRouter

from dockyard import model
from dockyard.api.deps import Admin, Db, Key, User
from dockyard.db import identity, quotas

router = APIRouter(tags=["identity"])


@router.post("/projects", status_code=201)
def create_project(body: model.ProjectCreate, db: Db, _: Admin) -> model.Project:
    with db.session() as s:
        return identity.create_project(s, body.name)


@router.get("/projects")
def list_projects(db: Db, _: Admin) -> list[model.Project]:
    with db.session(write=False) as s:
        return identity.list_projects(s)


@router.post("/users", status_code=201)
def create_user(body: model.UserCreate, db: Db, _: Admin) -> model.TokenCreated:
    with db.session() as s:
        user, token = identity.create_user(s, body)
        return model.TokenCreated(token=token, user=user.name)


@router.get("/users")
def list_users(db: Db, _: Admin) -> list[model.User]:
    with db.session(write=False) as s:
        return identity.list_users(s)


@router.patch("/users/{name}")
def update_user(name: Key, body: model.UserUpdate, db: Db, who: Admin) -> model.User:
    """Disable (its tokens are refused at once, on every server), enable, or change the role."""
    with db.session() as s:
        return identity.update_user(s, who, name, body)


@router.post("/agent-tokens", status_code=201)
def create_agent_token(body: model.AgentTokenCreate, db: Db, _: Admin) -> model.TokenCreated:
    """A credential for one host's agent; it can only act for that host."""
    with db.session() as s:
        return model.TokenCreated(token=identity.issue_agent_token(s, body.host), host=body.host)


@router.get("/tokens")
def list_tokens(db: Db, who: User) -> list[model.TokenInfo]:
    """Your tokens (admins: all tokens). The secrets themselves are never shown again."""
    with db.session(write=False) as s:
        return identity.list_tokens(s, who)


@router.post("/tokens", status_code=201)
def create_token(db: Db, who: User, body: model.TokenCreate | None = None) -> model.TokenCreated:
    """A new token for yourself, e.g. to rotate the one you use; optionally expiring
    (never later than the token that asks for it)."""
    with db.session() as s:
        return identity.new_own_token(s, who, body or model.TokenCreate())


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: Key, db: Db, who: User) -> None:
    """Refused by every server from this answer on: tokens are not cached."""
    with db.session() as s:
        identity.revoke_token(s, who, token_id)


@router.get("/quota")
def my_quota(db: Db, who: User) -> model.ProjectQuota:
    """Your project's quotas and what it uses."""
    with db.session(write=False) as s:
        return quotas.show(s, who, None)


@router.get("/projects/{name}/quota")
def project_quota(name: Key, db: Db, who: User) -> model.ProjectQuota:
    with db.session(write=False) as s:
        return quotas.show(s, who, name)


@router.patch("/projects/{name}/quota")
def set_quota(name: Key, body: model.Quota, db: Db, who: Admin) -> model.ProjectQuota:
    """Set some limits (the fields sent; null = unlimited); the others stay."""
    with db.session() as s:
        quotas.update(s, name, body.model_dump(exclude_unset=True))
        return quotas.show(s, who, name)


@router.get("/whoami")
def whoami(who: User) -> dict[str, str | None]:
    return {"name": who.name, "role": who.role, "project_id": who.project_id}
