"""Builds on build hosts: who builds what, the agents' reports, the image and deploy
a build ends in, and the controller's pass (api/builds.py ``BuildController``).

    assign        oldest queued build -> a free build host (up, enabled, labelled
                  BUILDS_LABEL); ``busy_host`` (unique) allows one build per host
    orders_for_host   the host's assigned (queued) and running builds as BuildOrders
    start / done / fail   the agent's reports on its own builds (409: not its, or ended)
    tick          timeouts (running past timeout + TIMEOUT_MARGIN: failed) and builds
                  assigned to a host that went away before starting (back in the queue)

Every function runs in its caller's transaction and returns the hosts whose agents
to wake. ``assign`` runs wherever a build is queued or a build host frees, so a
build waits for a tick only when hosts come and go.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.db import catalog, deploys, hosts
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import BadRequest, Conflict, DockyardError
from dockyard.model import RegistryLogin
from dockyard.model import builds as wire
from dockyard.model import paas as paas_wire

NO_BUILD_HOST = (
    "no build host is up: start an agent with --builds --reserved-cores LIST "
    "--reserved-memory-mb N"
)
TIMEOUT_MARGIN = timedelta(seconds=60)  # the agent's own timeout ends it first
QUEUED_AT_MOST = timedelta(hours=24)  # a build no host took by then fails, saying why
# a running build's host silent this long is gone for it (a short outage is not: its
# agent goes on building and reports when it is back)
HOST_GONE_AFTER = timedelta(minutes=10)
ACTIVE = (wire.BuildStatus.queued.value, wire.BuildStatus.running.value)


# scheduling ------------------------------------------------------------------------


def build_hosts(s: Session, now: datetime | None = None) -> list[m.Host]:
    """Up, enabled hosts whose agent builds (its label names the cores it builds on)."""
    rows = s.scalars(select(m.Host).where(m.Host.enabled.is_(True)).order_by(m.Host.name))
    return [h for h in rows if wire.BUILDS_LABEL in (h.labels or {}) and hosts.is_up(h, now)]


def assign(s: Session, now: datetime | None = None) -> list[str]:
    """The oldest queued builds to free build hosts, one each; the rest say why they
    wait. Returns the hosts given a build."""
    q = select(m.Build).where(m.Build.status == "queued", m.Build.busy_host.is_(None))
    waiting = list(s.scalars(q.order_by(m.Build.created_at, m.Build.id)).unique())
    if not waiting:
        return []
    hosts.lock_for_claim(s)  # two servers' assigns take turns (PostgreSQL)
    up = build_hosts(s, now)
    busy = set(s.scalars(select(m.Build.busy_host).where(m.Build.busy_host.is_not(None))))
    free = [h.name for h in up if h.name not in busy]
    given = list(zip(waiting, free, strict=False))
    for row, host in given:
        row.host_name = row.busy_host = host
        row.reason = None
    for row in waiting[len(given) :]:
        row.reason = NO_BUILD_HOST if not up else f"waiting for a build host ({len(up)} busy)"
    s.flush()
    return [host for _, host in given]


def finish(row: m.Build, status: wire.BuildStatus, reason: str | None) -> None:
    row.status, row.reason = status.value, reason[:4096] if reason else None
    row.finished_at, row.busy_host = m.now(), None


def active(s: Session) -> bool:
    """Whether any build is queued or running (the controller has work)."""
    q = select(m.Build.id).where(m.Build.status.in_(ACTIVE)).limit(1)
    return s.scalar(q) is not None


def tick(s: Session, now: datetime) -> list[str]:
    """Fail builds past their timeout, those whose build host has been silent for
    HOST_GONE_AFTER while they ran and those queued for a day; requeue those whose
    host went away before they started; then assign. Returns the hosts to wake."""
    woke: list[str] = []
    q = select(m.Build).where(m.Build.status.in_(ACTIVE)).with_for_update(of=m.Build)
    rows = list(s.scalars(q).unique())  # an agent's report on one of them waits its turn
    usable = {h.name for h in build_hosts(s, now)} if rows else set()
    for row in rows:
        host = row.busy_host
        limit = timedelta(seconds=row.timeout_seconds) + TIMEOUT_MARGIN
        if host is None:
            if now - row.created_at > QUEUED_AT_MOST:
                why = f"no build host took it in a day: {row.reason}"
                finish(row, wire.BuildStatus.failed, why)
        elif row.status == "running" and row.started_at and now - row.started_at > limit:
            finish(row, wire.BuildStatus.failed, f"timed out after {row.timeout_seconds} s")
            woke.append(host)
        elif row.status == "running" and _gone(s, host, now):
            why = f"its build host {host} went down ({HOST_GONE_AFTER} without a heartbeat)"
            finish(row, wire.BuildStatus.failed, why)
            woke.append(host)
        elif row.status == "queued" and host not in usable:
            row.host_name = row.busy_host = None  # not started there: any build host will do
            woke.append(host)
    s.flush()
    return woke + assign(s, now)


# the agent's side ------------------------------------------------------------------


def orders_for_host(
    s: Session, name: str, registry_url: str | None, login: RegistryLogin | None
) -> wire.BuildOrders:
    """The host's builds to carry out. The generation names the set of them (0: none),
    so it moves exactly when an order comes or goes."""
    q = select(m.Build).where(m.Build.busy_host == name, m.Build.status.in_(ACTIVE))
    rows = list(s.scalars(q.order_by(m.Build.created_at)).unique())
    netloc = urlsplit(registry_url or "").netloc
    orders = [
        wire.BuildOrder(
            id=r.id,
            repo=r.repo,
            ref=r.ref,
            commit=r.commit,
            dockerfile=r.dockerfile,
            push_repo=f"{netloc}/{repository(r)}",
            tag_date=r.created_at.strftime("%Y%m%d"),
            login=login,
            memory_mb=r.memory_mb,
            timeout_seconds=r.timeout_seconds,
        )
        for r in rows
    ]
    ids = ",".join(sorted(r.id for r in rows))
    generation = int(hashlib.sha256(ids.encode()).hexdigest()[:15], 16) + 1 if rows else 0
    return wire.BuildOrders(generation=generation, orders=orders)


def repository(row: m.Build) -> str:
    """PROJECT/APP in the primary registry (lower case, as Docker wants)."""
    return f"{row.project.name}/{row.app.name}".lower()


def _own(s: Session, host: str, build_id: str) -> m.Build:
    """The agent's own build, queued (assigned) or running; 409 otherwise: the agent
    stops working on it."""
    q = select(m.Build).where(m.Build.id == build_id).with_for_update(of=m.Build)
    row = s.scalar(q)  # reports on one build (log chunks) take turns
    if row is None:
        raise Conflict(f"build {build_id} is gone (its app was deleted); stop it")
    if row.host_name != host or row.busy_host != host or row.status not in ACTIVE:
        why = row.status if row.status not in ACTIVE else f"assigned to {row.host_name}"
        raise Conflict(f"build {build_id} is not this host's to run ({why}); stop it")
    return row


def start(s: Session, host: str, build_id: str) -> None:
    """The agent began (idempotent while it runs)."""
    row = _own(s, host, build_id)
    if row.status == "queued":
        row.status, row.started_at, row.reason = "running", m.now(), None


def fail(s: Session, host: str, build_id: str, req: wire.BuildFailure) -> list[str]:
    row = _own(s, host, build_id)
    row.commit = req.commit or row.commit
    finish(row, wire.BuildStatus.failed, req.error)
    s.flush()
    return assign(s)


def done(
    s: Session, host: str, build_id: str, req: wire.BuildDone, registry_url: str | None
) -> tuple[list[str], bool]:
    """Pushed: the image row (active, by digest), then with auto_deploy a deploy of the
    build's stack to it (one refused is the build's reason; the build still succeeded).
    Returns the hosts to wake and whether a deploy began."""
    row = _own(s, host, build_id)
    if not req.tag.endswith("-" + req.commit[:7]):
        raise BadRequest(f"tag {req.tag} does not name commit {req.commit}: YYYYMMDD-<sha7>")
    row.commit, row.seconds = req.commit, dict(req.seconds)
    row.started_at = row.started_at or m.now()
    try:
        with s.begin_nested():
            image = _image(s, row, req, registry_url)
    except DockyardError as exc:
        finish(row, wire.BuildStatus.failed, f"pushed {row.tag}, but: {exc.detail}")
        s.flush()
        return assign(s), False
    row.image_id, row.image_name, row.digest = image.id, image.name, req.digest
    finish(row, wire.BuildStatus.succeeded, None)
    began = bool(row.auto_deploy and row.stack) and _deploy(s, row, image)
    s.flush()
    return assign(s), began


def image_name(app: str, tag: str) -> str:
    """APP-YYYYMMDD-sha7 within 63 characters (the app's part trimmed)."""
    keep = 63 - len(tag) - 1
    return f"{app[:keep].rstrip('-._') or 'build'}-{tag}"


def _image(s: Session, row: m.Build, req: wire.BuildDone, registry_url: str | None) -> m.Image:
    """The app's project's image of this build: pulled from the primary registry by
    digest. The same commit built again the same day pushed the same tag: its image
    row follows the new digest (releases keep the digest they were made with)."""
    row.tag = f"{repository(row)}:{req.tag}"
    name = image_name(row.app.name, req.tag)
    q = select(m.Image).where(m.Image.project_id == row.project_id, m.Image.name == name)
    image = s.scalar(q)
    if image is None:
        catalog.private_name_check(s, row.project_id, name)
        image = m.Image(name=name, project_id=row.project_id, source="docker", ref=row.tag)
        s.add(image)
    elif image.ref != row.tag:
        raise Conflict(f"the project has an image named {name!r} of {image.ref}; "
                       "delete or rename it, then build again")  # fmt: skip
    image.status, image.digest, image.registry_url = "active", req.digest, registry_url
    image.size = req.size or None
    s.flush()
    return image


def _deploy(s: Session, row: m.Build, image: m.Image) -> bool:
    """The build's stack deployed to ``image`` as its author (within the app's project)."""
    assert row.stack is not None
    newer = _newer_deployed(s, row)
    if newer is not None:  # builds finish out of order: never roll back to an older push
        row.reason = f"built, but not deployed: build {newer} of a newer commit was deployed"
        return False
    # the release says it came from a build, never only the name a payload gave
    by = row.created_by if row.trigger == "manual" else f"ci:{row.created_by}"
    who = Principal(name=by[:63], role="member", project_id=row.project_id, user_id=row.user_id)
    try:
        with s.begin_nested():
            d = deploys.deploy(
                s, who, row.app_id, row.stack, paas_wire.DeployCreate(image=image.id)
            )
    except DockyardError as exc:  # a deploy running already (409), the stack gone (404)
        row.reason = f"built, but not deployed: {exc.detail}"[:4096]
        return False
    row.deploy_id = d.id
    return True


def _gone(s: Session, host: str, now: datetime) -> bool:
    row = s.scalar(select(m.Host).where(m.Host.name == host))
    beat = row.last_heartbeat if row is not None else None
    return beat is None or now - beat > HOST_GONE_AFTER


def _newer_deployed(s: Session, row: m.Build) -> str | None:
    """A later build of the same hook and ref that was deployed, if any."""
    if row.hook_id is None:
        return None
    q = select(m.Build.id).where(
        m.Build.hook_id == row.hook_id,
        m.Build.ref == row.ref,
        m.Build.created_at > row.created_at,
        m.Build.deploy_id.is_not(None),
    )
    return s.scalar(q.limit(1))
