"""Named volumes: a project's fixed-size filesystems for its instances.

Readers list and show; members and admins create and delete. Host-path mounts
are for admins only: a tenant's mounts are named volumes (``refuse_host_paths``).
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Response

from dockyard import model
from dockyard.api.deps import Db, Key, Member, User, Watch
from dockyard.db import volumes
from dockyard.db.identity import Principal
from dockyard.errors import Forbidden

router = APIRouter(tags=["volumes"])


def refuse_host_paths(who: Principal, mounts: Sequence[model.VolumeSpec]) -> None:
    """A host path gives the instance the host's files (/, /etc, docker.sock): admins only."""
    paths = [v.host_path for v in mounts if v.host_path is not None]
    if paths and not who.is_admin:
        raise Forbidden(
            f"only admins may mount host paths ({', '.join(paths)}); use a named volume: "
            "`dockyard volume create NAME --size 1GB`, then `--volume NAME:/path`"
        )


@router.post("/volumes", status_code=201)
def create_volume(body: model.VolumeCreate, db: Db, who: Member) -> model.Volume:
    """An empty volume; its data goes to a host when an instance first uses it."""
    with db.session() as s:
        return volumes.create(s, who, body)


@router.get("/volumes")
def list_volumes(db: Db, who: User) -> list[model.Volume]:
    with db.session(write=False) as s:
        return volumes.list_volumes(s, who)


@router.get("/volumes/{key}")
def show_volume(key: Key, db: Db, who: User) -> model.Volume:
    with db.session(write=False) as s:
        return volumes.show(s, who, key)


@router.delete("/volumes/{key}", status_code=204)
def delete_volume(key: Key, who: Member, db: Db, watch: Watch) -> Response:
    """Refused (409) while an instance uses it; its host's agent then removes its data."""
    with db.session() as s:
        host = volumes.delete(s, who, key)
    watch.notify(host)
    return Response(status_code=204)
