"""What a cold migration leaves in the registry, deleted once the move has ended.

A migration pushes the instance's root filesystem as an image (``NAME-migration-ID8``,
the Image row whose id is the migration's) and each named volume's data as
``REPO-volumes/<volume id>:o<order>`` (its ``volumes`` column, pulled by digest). Once
the move finished or rolled back (``finished_at``), the checker (api/moves.py, under
the "migrations" lease) takes each such migration once:

    sweep(s, primary) ─► the volume copies: manifests to delete (the target restored
                         and checked them, or the move was given up)
                     ─► the instance's migration images nothing needs any more:
                         rows deleted here (with a "prune" action in its log)
                     ─► registry_cleaned_at = now
    the caller, after the commit: DELETE each manifest by digest, then asks for a
    garbage collection (db/registry_gc.py), which reclaims the blobs

A migration image is kept while something needs it (db/schedules.py ``protected``):
the one a finished move left the instance running from (a lost container is
respawned from it, an evacuation rebuilds from it), one another instance was created
from, one a move in flight or kept evacuation data names. So a rolled-back move's
image goes at once, a finished move's when a later move supersedes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.db import catalog, instance_log, registries, schedules
from dockyard.db import models as m

log = logging.getLogger(__name__)
WHO = "migrations"  # the action log's user for what the cleanup does


@dataclass(frozen=True)
class Manifest:
    """One manifest to delete: in ``registry_url``'s ``repository``, by ``digest``."""

    registry_url: str
    repository: str
    digest: str
    what: str  # for the log: "image web-migration-1a2b3c4d", "volume copy of ..."


def sweep(s: Session, primary_url: str) -> list[Manifest]:
    """Take every ended migration not yet cleaned; returns the manifests to delete
    once this commits."""
    ended = s.scalars(
        select(m.Migration)
        .where(
            m.Migration.kind == "migration",
            m.Migration.finished_at.is_not(None),
            m.Migration.registry_cleaned_at.is_(None),
        )
        .order_by(m.Migration.finished_at)
        .with_for_update(of=m.Migration)
    ).unique()
    out: list[Manifest] = []
    for mig in list(ended):
        out += _volume_copies(mig, primary_url)
        out += _images(s, mig.instance_id)
        mig.registry_cleaned_at = m.now()
    return out


def _volume_copies(mig: m.Migration, primary_url: str) -> list[Manifest]:
    """The volume copies the source pushed (``pull``: HOST:PORT/REPO@sha256:...)."""
    out = []
    primary = urlsplit(primary_url).netloc
    for volume_id, copy in (mig.volumes or {}).items():
        where, _, digest = str(copy.get("pull", "")).partition("@")
        netloc, _, repository = where.partition("/")
        if netloc != primary or not repository or not digest:
            log.warning("migration %s: volume copy %r is not in the primary", mig.id, copy)
            continue
        what = f"volume copy of {volume_id} (migration {mig.id[:8]})"
        out.append(Manifest(primary_url, repository, digest, what))
    return out


def _images(s: Session, instance_id: str) -> list[Manifest]:
    """The instance's migration images nothing needs, deleted (rows); their manifests."""
    made = select(m.Migration.id).where(
        m.Migration.instance_id == instance_id, m.Migration.kind == "migration"
    )
    rows = s.scalars(select(m.Image).where(m.Image.id.in_(made), m.Image.status != "queued")).all()
    kept = schedules.protected(s)
    out = []
    for row in rows:
        if row.id in kept:
            continue
        if row.digest and row.registry_url:
            repository = registries.repository(row.ref)
            out.append(Manifest(row.registry_url, repository, row.digest, f"image {row.name}"))
        catalog.delete_image(s, row.id)
        instance_log.log(s, instance_id, WHO, "prune", WHO, f"image {row.name} (migration)")
    return out
