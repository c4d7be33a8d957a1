"""Consistency checks for admins: each host's drift, and the cluster's baseline.

Included before api/hosts.py: ``/hosts/check`` and ``/hosts/baseline`` must not be
taken for a host called "check" or "baseline" by ``/hosts/{name}``.
"""

from __future__ import annotations

from fastapi import APIRouter

from dockyard import model
from dockyard.api.deps import Admin, Db, Key
from dockyard.db import drift

router = APIRouter(tags=["hosts"])


@router.get("/hosts/check")
def check_all(db: Db, _: Admin) -> list[model.HostCheck]:
    """Every host's drift from the cluster's baseline, and its instances' drift."""
    with db.session(write=False) as s:
        return drift.check(s)


@router.get("/hosts/baseline")
def show_baseline(db: Db, _: Admin) -> list[model.BaselineItem]:
    """What each item should be: declared, required, or the majority of up hosts."""
    with db.session(write=False) as s:
        return drift.baseline(s)


@router.put("/hosts/baseline")
def declare_baseline(body: model.BaselineDeclare, db: Db, _: Admin) -> list[model.BaselineItem]:
    """Declare expected values (they win over the majority); ``remove`` forgets some."""
    with db.session() as s:
        return drift.declare(s, body)


@router.get("/hosts/{name}/check")
def check_host(name: Key, db: Db, _: Admin) -> model.HostCheck:
    with db.session(write=False) as s:
        return drift.check(s, name)[0]
