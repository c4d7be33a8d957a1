"""Flavors, images and networks: readable by everyone, written by admins.

Images are the exception: a project's snapshots are its own. Members see and boot
public images and their project's, and delete their project's (db/catalog.py).

Every handler opens its own session and returns wire models built inside it, so
the commit runs before the answer; files move only after the commit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from dockyard import model
from dockyard.api import registry
from dockyard.api.deps import Admin, Db, Key, Member, principal
from dockyard.api.limits import TooLarge
from dockyard.db import catalog
from dockyard.db.identity import Principal
from dockyard.db.session import Database
from dockyard.errors import BadRequest, Conflict

log = logging.getLogger(__name__)
router = APIRouter()
_READ = [Depends(principal)]
Reader = Annotated[Principal, Depends(principal)]  # users and agents (who see every image)
_TARBALL: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}
}
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the rootfs tarball, streamed (a size limit applies: --max-upload-gb)",
        "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post("/flavors", status_code=201, tags=["flavors"])
def create_flavor(body: model.FlavorCreate, db: Db, _: Admin) -> model.Flavor:
    with db.session() as s:
        return catalog.create_flavor(s, body)


@router.get("/flavors", tags=["flavors"], dependencies=_READ)
def list_flavors(db: Db) -> list[model.Flavor]:
    with db.session(write=False) as s:
        return catalog.list_flavors(s)


@router.get("/flavors/{key}", tags=["flavors"], dependencies=_READ)
def show_flavor(key: Key, db: Db) -> model.Flavor:
    with db.session(write=False) as s:
        return catalog.show_flavor(s, key)


@router.delete("/flavors/{key}", status_code=204, tags=["flavors"])
def delete_flavor(key: Key, db: Db, _: Admin) -> None:
    """Refused (409) while a live instance uses it; deleted instances do not count."""
    with db.session() as s:
        catalog.delete_flavor(s, key)


@router.post("/networks", status_code=201, tags=["networks"])
def create_network(body: model.NetworkCreate, db: Db, _: Admin) -> model.Network:
    with db.session() as s:
        return catalog.create_network(s, body)


@router.get("/networks", tags=["networks"], dependencies=_READ)
def list_networks(db: Db) -> list[model.Network]:
    with db.session(write=False) as s:
        return catalog.list_networks(s)


@router.get("/networks/{key}", tags=["networks"], dependencies=_READ)
def show_network(key: Key, db: Db) -> model.Network:
    with db.session(write=False) as s:
        return catalog.network_model(catalog.network(s, key))


@router.delete("/networks/{key}", status_code=204, tags=["networks"])
def delete_network(key: Key, db: Db, _: Admin) -> None:
    """Refused (409) while a live instance uses it; deleted instances do not count."""
    with db.session() as s:
        catalog.delete_network(s, key)


@router.post("/images", status_code=201, tags=["images"])
def create_image(body: model.ImageCreate, db: Db, _: Admin) -> model.Image:
    with db.session() as s:
        return catalog.create_image(s, body)


@router.get("/images", tags=["images"])
def list_images(
    db: Db, who: Reader, migrations: Annotated[bool, Query()] = False
) -> list[model.Image]:
    """Public images and your project's snapshots (admins: every project's); the
    images cold migrations made (kind=migration) only with ``migrations=true``."""
    with db.session(write=False) as s:
        return catalog.list_for(s, who, migrations)


@router.get("/images/{key}", tags=["images"])
def show_image(key: Key, db: Db, who: Reader) -> model.Image:
    """Another project's image is absent (404), as if it did not exist."""
    with db.session(write=False) as s:
        return catalog.show_for(s, who, key)


@router.delete("/images/{key}", status_code=204, tags=["images"])
def delete_image(key: Key, request: Request, db: Db, who: Member) -> None:
    """Admins delete any image, members their project's snapshots (403 for a public
    one, 404 for another project's). Refused (409) while a live instance uses it;
    the tarball, or the registry's manifest (its blobs at the next garbage
    collection), goes after the commit."""
    with db.session() as s:
        image = catalog.show_for(s, who, key)
        catalog.delete_image(s, image.id, who)
    _prune(db, _image_dir(request), image.id)
    registry.forget(request, image)


@router.put("/images/{key}/file", tags=["images"], openapi_extra=_UPLOAD_BODY)
async def upload_image(key: Key, request: Request, db: Db, _: Admin) -> model.Image:
    """Upload the rootfs tarball of a rootfs image (streamed, hashed on the way).

    Each upload writes its own temporary file; of two concurrent uploads the last
    to finish wins, and the recorded sha256 is always that of the file in place.
    The database work runs in a worker thread, never on the event loop.
    """
    image_id = await run_in_threadpool(_upload_target, db, key)
    root = _image_dir(request)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{image_id}.{uuid.uuid4().hex}.part"
    try:
        digest, size = await _receive(request, tmp)
        if size == 0:
            raise Conflict("the upload was empty; send the rootfs tarball as the request body")
        primary = registry.settings(request)
        if primary is not None:  # hosts pull it from the registry, by digest
            gate = registry.gate(request)
            upload = (tmp, digest, size)
            return await run_in_threadpool(registry.push, primary, gate, db, image_id, upload)
        return await run_in_threadpool(_install, db, root, image_id, tmp, digest, size)
    except ClientDisconnect as exc:  # nobody reads the answer; no traceback in the log
        log.info("an upload of image %s stopped: the client went away", image_id)
        raise BadRequest("the upload stopped before its end; send it again") from exc
    finally:
        tmp.unlink(missing_ok=True)


async def _receive(request: Request, tmp: Path) -> tuple[str, int]:
    limit: int = request.app.state.max_upload_bytes
    digest, size = hashlib.sha256(), 0
    with tmp.open("wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(limit, "an image upload", "--max-upload-gb")
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest(), size


def _upload_target(db: Database, key: str) -> str:
    with db.session(write=False) as s:
        image = catalog.show_image(s, key)
    if image.source != model.ImageSource.rootfs:
        raise Conflict(f"image {key!r} comes from docker; it takes no upload")
    return image.id


def _install(
    db: Database, root: Path, image_id: str, tmp: Path, sha256: str, size: int
) -> model.Image:
    """Record the upload with its file in place under its own name, one per content.

    The row is updated (and locked) first; the file is named by its hash, so the
    file the committed row names is never overwritten: a failed commit leaves the
    old row and the old file in force (the new file is pruned later), and an
    image deleted meanwhile raises NotFound and the file is dropped. Afterwards
    the files the row no longer names go.
    """
    with db.session() as s:
        out = catalog.image_uploaded(s, image_id, sha256, size)
        s.flush()
        os.replace(tmp, root / f"{image_id}.{sha256}.tar")
    _prune(db, root, image_id)
    return out


def _prune(db: Database, root: Path, image_id: str) -> None:
    """Remove the image's tarballs other than the one its committed row names (all of
    them once it is deleted), under the row's lock so no upload commits meanwhile."""
    with db.session() as s:
        keep = catalog.locked_sha256(s, image_id)
        for f in root.glob(f"{image_id}.*tar"):
            if keep is None or f != _tarball(root, image_id, keep):
                f.unlink(missing_ok=True)


@router.get(
    "/images/{key}/file",
    tags=["images"],
    response_model=None,
    responses=_TARBALL,
    response_class=FileResponse,
)
def download_image(key: Key, request: Request, db: Db, who: Reader) -> Response:
    with db.session(write=False) as s:
        image = catalog.show_for(s, who, key)
    path = _tarball(_image_dir(request), image.id, image.sha256 or "")
    if image.status != "active" or not path.exists():
        raise Conflict(f"image {image.name!r} has no rootfs uploaded; upload it first")
    return FileResponse(path, media_type="application/x-tar")


def _image_dir(request: Request) -> Path:
    root: Path = request.app.state.image_dir
    return root


def _tarball(root: Path, image_id: str, sha256: str) -> Path:
    """An image's tarball is named by its content; one from before that, by the image."""
    path = root / f"{image_id}.{sha256}.tar"
    legacy = root / f"{image_id}.tar"
    return legacy if not path.exists() and legacy.exists() else path
