"""Registries: the primary (``dockyard-server --registry URL``) and a cache per AZ.

    image import --rootfs  -> PUT /v1/images/{key}/file -> the server pushes the
                              tarball to the primary as REPO:TAG, records its digest
    host in AZ a           -> pulls CACHE(a)/REPO@DIGEST, else PRIMARY/REPO@DIGEST
    image delete           -> DELETE the manifest, then (with --registry-root, the
                              registry beside the server) garbage-collect its blobs
                              once no push is in flight (GarbageCollector)

The server logs in as ``dockyard`` (images/logins.py: ``--registry-logins FILE``)
and verifies an https registry against ``--registry-ca`` (default the API's
``--tls-ca``: the cloud's CA). Agents get the hosts' login with each desired
instance that pulls; admins get the server's from ``GET /v1/registries/login``.

The server pushes, not the CLI: it is the one that records the digest, so a
digest in the database always names a manifest that reached the registry; the
CLI stays a thin client without registry credentials; and a server without a
registry keeps serving tarballs to agents as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request

from dockyard import model
from dockyard.api.deps import Admin, Db, principal
from dockyard.api.watch import HostWatch
from dockyard.db import catalog, move_cleanup, registries, registry_gc
from dockyard.db.lease import Lease
from dockyard.db.session import Database
from dockyard.errors import Conflict, DockyardError, NotFound, PermanentError, TemporaryError
from dockyard.images import distribution
from dockyard.images.logins import Logins
from dockyard.images.registry import Registry

log = logging.getLogger(__name__)
router = APIRouter(tags=["registries"])


class RegistryUnavailable(DockyardError):
    status = 503
    title = "Registry unavailable"


@contextmanager
def _talking(url: str, primary: RegistrySettings | None) -> Iterator[Registry]:
    """A client of ``url``; its failures as the API's: unreachable 503, refused 409."""
    verify = primary.ca if primary and primary.ca else True
    logins = primary.logins if primary else None
    # the server's login (push, delete) goes to the primary only; an AZ's cache, at an
    # address an admin typed, is read with the hosts' (pull) login
    auth = (
        None
        if logins is None
        else (
            logins.server
            if primary and url.rstrip("/") == primary.url.rstrip("/")
            else logins.hosts
        )
    )
    try:
        with Registry(url, (auth.username, auth.password) if auth else None, verify) as reg:
            yield reg
    except TemporaryError as exc:
        raise RegistryUnavailable(f"{exc.detail}; check that it runs, then retry") from exc
    except PermanentError as exc:
        raise Conflict(exc.detail) from exc


@dataclass(frozen=True)
class RegistrySettings:
    url: str  # the primary: images are pushed here
    root: Path | None = None  # its directory (distribution.RegistryConfig) for garbage collection
    ca: str | None = None  # a CA bundle to verify an https registry with
    logins: Logins | None = None  # the registries require logins (the primary and caches alike)

    def pull_login(self) -> model.RegistryLogin | None:
        """What agents pull with: the hosts' login."""
        if self.logins is None:
            return None
        hosts = self.logins.hosts
        return model.RegistryLogin(username=hosts.username, password=hosts.password)


def settings(request: Request) -> RegistrySettings | None:
    found: RegistrySettings | None = getattr(request.app.state, "registry", None)
    return found


async def _settings(request: Request) -> RegistrySettings | None:
    """``settings`` as a dependency: on the event loop, no worker thread (api/deps.py)."""
    return settings(request)


Settings = Annotated[RegistrySettings | None, Depends(_settings)]


@router.get("/registries", dependencies=[Depends(principal)])
def list_registries(db: Db, primary: Settings) -> list[model.Registry]:
    with db.session(write=False) as s:
        caches = registries.listed(s)
        gc = registry_gc.describe(s, primary.url) if primary else None
    if gc and primary and primary.root is None and gc.startswith("waiting"):
        gc += " (collected by a server started with --registry-root)"
    if primary is None:
        return caches
    first = model.Registry(availability_zone=None, url=primary.url, primary=True)
    return [first.model_copy(update={"garbage_collection": gc}), *caches]


@router.get("/registries/login")
def registry_login(primary: Settings, _: Admin) -> model.RegistryLogin:
    """The server's login to the primary, for an admin's ``docker login`` (push, pull,
    delete: the registry's htpasswd does not tell them apart, so members get none)."""
    if primary is None:
        raise NotFound("this cloud has no registry; start the server with --registry")
    if primary.logins is None:
        raise NotFound(
            f"the registry {primary.url} takes no login (the server has no --registry-logins)"
        )
    server = primary.logins.server
    return model.RegistryLogin(
        registry=urlsplit(primary.url).netloc, username=server.username, password=server.password
    )


@router.post("/registries", status_code=201)
def add_registry(body: model.RegistryCreate, db: Db, _: Admin) -> model.Registry:
    with db.session() as s:
        return registries.add(s, body)


@router.delete("/registries/{az}", status_code=204)
def remove_registry(az: str, db: Db, _: Admin) -> None:
    with db.session() as s:
        registries.remove(s, az)


@router.get("/registries/images")
def registry_images(
    db: Db, primary: Settings, _: Admin, az: Annotated[str | None, Query(max_length=63)] = None
) -> model.RegistryImages:
    """What the primary (or ``az``'s cache: only what its hosts pulled) holds."""
    with db.session(write=False) as s:
        url = registries.url_for(s, az) if az else (primary.url if primary else None)
        names = {(registries.repository(i.ref), i.digest): i.name for i in catalog.list_images(s)}
    if url is None:
        where = f"availability zone {az!r} has no registry" if az else "no registry"
        raise NotFound(f"{where}; start the server with --registry or `dockyard registry add`")
    with _talking(url, primary) as reg:
        tagged = reg.images()
    return model.RegistryImages(
        registry=url,
        images=[
            model.RegistryImage(
                repository=t.repository,
                tag=t.tag,
                digest=t.digest,
                size=t.size,
                pushed=t.pushed,
                image=names.get((t.repository, t.digest)),
            )
            for t in tagged
        ],
    )


# --- called by the images' handlers (api/catalog.py)


def push(
    primary: RegistrySettings,
    gate: registry_gc.PushGate,
    db: Database,
    image_id: str,
    upload: tuple[Path, str, int],
) -> model.Image:
    """Push an uploaded rootfs (file, sha256, size) to the primary, then record its
    digest (never before: a digest in the database names a manifest the registry
    has). The push holds the gate: it waits while a garbage collection runs."""
    tar, sha256, size = upload
    with db.session(write=False) as s:
        image = catalog.show_image(s, image_id)
    repo, _, tag = image.ref.rpartition(":")
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with gate.pushing(), _talking(primary.url, primary) as reg:
        pushed = reg.push_rootfs(repo, tag, tar, image.command, created)
    with db.session() as s:
        return catalog.image_uploaded(s, image_id, sha256, size, pushed.digest, primary.url)


def gate(request: Request) -> registry_gc.PushGate:
    found: registry_gc.PushGate = request.app.state.registry_gate
    return found


def forget(request: Request, image: model.Image) -> None:
    """After an image's row is deleted: its manifest goes, and its blobs with the next
    garbage collection (requested here, run by the collector beside the registry)."""
    db: Database = request.app.state.db
    if forget_all(settings(request), db, [image]):
        collector: GarbageCollector | None = getattr(request.app.state, "registry_gc", None)
        if collector is not None:
            collector.wake()


def forget_all(primary: RegistrySettings | None, db: Database, images: list[model.Image]) -> bool:
    """Each image's manifest goes; a garbage collection of the primary is requested
    (any server records it; the one beside the registry collects, when no push is in
    flight: db/registry_gc.py). True when one was requested."""
    collect = [_delete_manifest(primary, image) for image in images]
    if not any(collect) or primary is None:
        return False
    with db.session() as s:
        registry_gc.request(s, primary.url)
    return True


def _delete_manifest(primary: RegistrySettings | None, image: model.Image) -> bool:
    """Delete the image's manifest; True when it was in the primary (whose blobs a
    garbage collection then frees). A failure is logged: the row is gone already."""
    if not image.digest or not image.registry_url:
        return False
    repository = registries.repository(image.ref)
    where = (image.registry_url, repository, image.digest)
    return _delete_ref(primary, *where, f"image {image.name}")


def forget_manifests(
    primary: RegistrySettings | None, db: Database, manifests: list[move_cleanup.Manifest]
) -> bool:
    """As ``forget_all``, for manifests without an image row (db/move_cleanup.py)."""
    collect = [
        _delete_ref(primary, mf.registry_url, mf.repository, mf.digest, mf.what)
        for mf in manifests
    ]
    if not any(collect) or primary is None:
        return False
    with db.session() as s:
        registry_gc.request(s, primary.url)
    return True


def _delete_ref(
    primary: RegistrySettings | None, url: str, repository: str, digest: str, what: str
) -> bool:
    try:
        with _talking(url, primary) as reg:
            reg.delete(repository, digest)
    except DockyardError as exc:  # the blobs wait for a later GC
        log.warning("%s: its manifest stays in %s: %s", what, url, exc)
        return False
    return primary is not None and url == primary.url


class GarbageCollector:
    """Collects the primary's garbage when asked, never while a push is in flight
    (db/registry_gc.py has the rule): a second after it is asked (so a burst of
    deletes costs one stop of the registry), then every ``interval`` seconds while
    a request waits, and only while this server holds the "registry-gc" lease."""

    def __init__(
        self, db: Database, watch: HostWatch, primary: RegistrySettings, interval: float = 5.0
    ) -> None:
        assert primary.root is not None
        self.db, self.watch, self.root, self.interval = db, watch, primary.root, interval
        self.url, self.gate = primary.url, registry_gc.PushGate(db, primary.url)
        self._lease = Lease(db, "registry-gc")
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._fresh = True  # a new holder of the lease closes windows a dead one left

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="registry-gc", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._lease.release()

    def request(self) -> None:
        """Record that a collection is wanted and run it soon."""
        with self.db.session() as s:
            registry_gc.request(s, self.url)
        self.wake()

    def wake(self) -> None:
        """A request was recorded: collect soon rather than at the next tick."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._wake.wait(self.interval):  # asked: let a burst of deletes gather
                self._stop.wait(min(1.0, self.interval))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.collect()
            except Exception:  # a pass that failed is retried on the next tick
                log.exception("registry garbage collection pass failed")

    def collect(self) -> str:
        """One pass; says what it did (collected, postponed and why, or nothing)."""
        if not self._lease.held():
            self._fresh = True
            return "another server collects"
        with self.db.session() as s:
            if self._fresh:
                registry_gc.close_stale(s)
                self._fresh = False
        with self.db.session() as s:  # the window opens (commits) before the check
            since = registry_gc.open_window(s, self.url)
        if since is None:
            return "nothing to collect"
        with self.db.session() as s:
            busy = registry_gc.pushes(s)
        if busy:
            return self._postpone(", ".join(busy[:5]) + (" ..." if len(busy) > 5 else ""))
        with self.gate.collecting() as free:
            if not free:
                return self._postpone("an image import (pushed by a server)")
            with self.db.session() as s:
                registry_gc.begin(s, self.url)
            failed = _collect(self.root)
        with self.db.session() as s:
            woken = registry_gc.finish(s, self.url, since)
        for host in woken:
            self.watch.notify(host)
        return f"failed: {failed}" if failed else "collected"

    def _postpone(self, why: str) -> str:
        with self.db.session() as s:
            registry_gc.postpone(s, self.url, why)
        log.info("registry garbage collection postponed until %s ends", why)
        return f"postponed: {why}"


def _collect(root: Path) -> str | None:
    """Distribution collects only while nothing writes: stop, collect, start. A
    failure is logged and given up (the next image delete asks again)."""
    try:
        distribution.garbage_collect(distribution.load(root))
    except (Conflict, OSError) as exc:
        log.warning("registry garbage collection failed: %s", exc)
        return str(exc)
    return None
