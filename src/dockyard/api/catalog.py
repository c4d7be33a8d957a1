"""Flavors, images and networks: readable by everyone, written by admins."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse

from dockyard import model
from dockyard.api.deps import DB, Admin, Db, principal
from dockyard.db import catalog
from dockyard.errors import Conflict

router = APIRouter()
_READ = [Depends(principal)]


@router.post("/flavors", status_code=201, tags=["flavors"])
def create_flavor(body: model.FlavorCreate, s: DB, _: Admin) -> model.Flavor:
    return catalog.create_flavor(s, body)


@router.get("/flavors", tags=["flavors"], dependencies=_READ)
def list_flavors(s: DB) -> list[model.Flavor]:
    return catalog.list_flavors(s)


@router.get("/flavors/{key}", tags=["flavors"], dependencies=_READ)
def show_flavor(key: str, s: DB) -> model.Flavor:
    return model.Flavor.model_validate(catalog.flavor(s, key))


@router.delete("/flavors/{key}", status_code=204, tags=["flavors"])
def delete_flavor(key: str, s: DB, _: Admin) -> None:
    catalog.delete_flavor(s, key)


@router.post("/networks", status_code=201, tags=["networks"])
def create_network(body: model.NetworkCreate, s: DB, _: Admin) -> model.Network:
    return catalog.create_network(s, body)


@router.get("/networks", tags=["networks"], dependencies=_READ)
def list_networks(s: DB) -> list[model.Network]:
    return catalog.list_networks(s)


@router.get("/networks/{key}", tags=["networks"], dependencies=_READ)
def show_network(key: str, s: DB) -> model.Network:
    return catalog.network_model(catalog.network(s, key))


@router.delete("/networks/{key}", status_code=204, tags=["networks"])
def delete_network(key: str, s: DB, _: Admin) -> None:
    catalog.delete_network(s, key)


@router.post("/images", status_code=201, tags=["images"])
def create_image(body: model.ImageCreate, s: DB, _: Admin) -> model.Image:
    return catalog.create_image(s, body)


@router.get("/images", tags=["images"], dependencies=_READ)
def list_images(s: DB) -> list[model.Image]:
    return catalog.list_images(s)


@router.get("/images/{key}", tags=["images"], dependencies=_READ)
def show_image(key: str, s: DB) -> model.Image:
    return catalog.image_model(catalog.image(s, key))


@router.delete("/images/{key}", status_code=204, tags=["images"])
def delete_image(key: str, request: Request, s: DB, _: Admin) -> None:
    row = catalog.delete_image(s, key)
    _image_path(request, row.id).unlink(missing_ok=True)


@router.put("/images/{key}/file", tags=["images"])
async def upload_image(key: str, request: Request, db: Db, _: Admin) -> model.Image:
    """Upload the rootfs tarball of a rootfs image (streamed, hashed on the way)."""
    with db.session() as s:
        row = catalog.image(s, key)
        image_id, source = row.id, row.source
    if source != model.ImageSource.rootfs.value:
        raise Conflict(f"image {key!r} comes from docker; it takes no upload")
    path = _image_path(request, image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    digest, size = hashlib.sha256(), 0
    with tmp.open("wb") as f:
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
            f.write(chunk)
    if size == 0:
        tmp.unlink()
        raise Conflict("the upload was empty; send the rootfs tarball as the request body")
    tmp.rename(path)
    with db.session() as s:
        return catalog.image_uploaded(s, image_id, digest.hexdigest(), size)


@router.get("/images/{key}/file", tags=["images"], dependencies=_READ, response_model=None)
def download_image(key: str, request: Request, s: DB) -> Response:
    row = catalog.image(s, key)
    path = _image_path(request, row.id)
    if row.status != "active" or not path.exists():
        raise Conflict(f"image {row.name!r} has no rootfs uploaded; upload it first")
    return FileResponse(path, media_type="application/x-tar")


def _image_path(request: Request, image_id: str) -> Path:
    root: Path = request.app.state.image_dir
    return root / f"{image_id}.tar"
