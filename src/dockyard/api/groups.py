"""Server groups: placement policies for a project's instances.

Readers list and show their project's groups (admins see every project's);
members and admins create and delete. A group is joined at ``POST /instances``
(``group``); a delete is refused (409, naming them) while it has members. A stack's
group is the stack's (db/managed.py): neither deleted nor joined here.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from dockyard import model
from dockyard.api.deps import Db, Key, Member, User
from dockyard.db import groups, managed

router = APIRouter(tags=["server-groups"])


@router.post("/server-groups", status_code=201)
def create_group(body: model.ServerGroupCreate, db: Db, who: Member) -> model.ServerGroup:
    """An empty group in the caller's project; its policy holds for every member."""
    with db.session() as s:
        return groups.create(s, who, body)


@router.get("/server-groups")
def list_groups(db: Db, who: User) -> list[model.ServerGroup]:
    with db.session(write=False) as s:
        return groups.list_groups(s, who)


@router.get("/server-groups/{key}")
def show_group(key: Key, db: Db, who: User) -> model.ServerGroup:
    """The group, its members, and which host each placed member runs on."""
    with db.session(write=False) as s:
        return groups.show(s, who, key)


@router.delete("/server-groups/{key}", status_code=204)
def delete_group(key: Key, db: Db, who: Member) -> Response:
    """Refused (409, naming them) while it has live members."""
    with db.session() as s:
        managed.refuse_group(s, who, key, "delete")  # a stack's: stack delete
        groups.delete(s, who, key)
    return Response(status_code=204)
