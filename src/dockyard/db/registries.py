"""Registries: the AZ caches admins register, and where each host pulls an image from.

The primary registry is the server's option (``dockyard-server --registry URL``);
an image pushed there records that URL and its digest. A host pulls
``CACHE/REPO@DIGEST`` from its AZ's cache when one is registered, then the
primary's ``PRIMARY/REPO@DIGEST``: a digest names the same image everywhere.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import models as m
from dockyard.errors import Conflict, NotFound
from dockyard.images.registry import pull_ref


def add(s: Session, req: model.RegistryCreate) -> model.Registry:
    taken = s.scalar(
        select(m.Registry).where(m.Registry.availability_zone == req.availability_zone)
    )
    if taken is not None:
        raise Conflict(
            f"availability zone {req.availability_zone!r} already has a registry ({taken.url}); "
            "remove it first with `dockyard registry remove --az`"
        )
    row = m.Registry(availability_zone=req.availability_zone, url=req.url.rstrip("/"))
    s.add(row)
    s.flush()
    return _wire(row)


def remove(s: Session, az: str) -> None:
    row = s.scalar(select(m.Registry).where(m.Registry.availability_zone == az))
    if row is None:
        raise NotFound(f"availability zone {az!r} has no registry; see `dockyard registry list`")
    s.delete(row)


def listed(s: Session) -> list[model.Registry]:
    rows = s.scalars(select(m.Registry).order_by(m.Registry.availability_zone))
    return [_wire(r) for r in rows]


def url_for(s: Session, az: str) -> str | None:
    return s.scalar(select(m.Registry.url).where(m.Registry.availability_zone == az))


def _wire(row: m.Registry) -> model.Registry:
    return model.Registry(availability_zone=row.availability_zone, url=row.url)


def repository(ref: str) -> str:
    """``dockyard/web:1a2b3c4d`` -> ``dockyard/web``."""
    name, _, tag = ref.rpartition(":")
    return name if name and "/" not in tag else ref


def pulls(cache: str | None, image: m.Image) -> list[str]:
    """Where a host pulls ``image`` from, in order; empty when it is not in a registry."""
    if not image.digest or not image.registry_url:
        return []
    repo = repository(image.ref)
    urls = (
        [cache, image.registry_url]
        if cache and cache != image.registry_url
        else [image.registry_url]
    )
    return [pull_ref(url, repo, image.digest) for url in urls]


def with_pulls(s: Session, az: str, state: model.DesiredState) -> model.DesiredState:
    """``state`` with each instance's image_pulls for a host in ``az``."""
    cache = url_for(s, az)
    ids = {i.image_id for i in state.instances}
    images = {r.id: r for r in s.scalars(select(m.Image).where(m.Image.id.in_(ids)))}
    for inst in state.instances:
        row = images.get(inst.image_id)
        if row is not None:
            inst.image_pulls = pulls(cache, row)
    return state
