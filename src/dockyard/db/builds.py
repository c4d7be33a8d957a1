"""Continuous integration's rows: an app's git hooks and its builds (model/builds.py
draws the whole flow; paas/README.md tells the rules).

    hook create/list/delete      an app member's; the secret is shown once, kept to verify
    verify_push (the webhook)    read-only: verified against the app's hooks' secrets
    queue_push                   a queued Build per hook following the pushed branch (a
                                 commit built already starts nothing; older queued builds
                                 of the branch are superseded)
    start (a member, by hand)    a queued Build of a ref through one of the app's hooks

A build always clones its hook's registered repository, never a URL from a payload.
Queued builds go to build hosts in db/build_runs.py (``assign``, in the same
transaction); the agents' reports land there too. Builds and hooks go with their app.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from dockyard.db import build_runs, paas
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import BadRequest, Conflict, NotFound, Unauthorized
from dockyard.model import builds as wire
from dockyard.paas import webhooks

log = logging.getLogger(__name__)
NO_REGISTRY = "this server has no registry to push builds to; start it with --registry URL"
MAX_HOOKS_PER_APP = 10  # every delivery is checked against each: a bound on its cost
MAX_ACTIVE_BUILDS_PER_APP = 20  # queued or running: one app cannot hold the build hosts


@dataclass(frozen=True)
class Limits:
    """What every build gets (the server's --build-memory-mb, --build-timeout)."""

    memory_mb: int = 2048
    timeout_seconds: int = wire.BUILD_TIMEOUT_DEFAULT


# hooks ------------------------------------------------------------------------------


def create_hook(s: Session, who: Principal, app_key: str, req: wire.HookCreate) -> wire.Hook:
    """The hook, its secret in this answer only (made here when none was sent)."""
    app = paas.get_app(s, who, app_key)
    if len(_hooks(s, app)) >= MAX_HOOKS_PER_APP:
        raise Conflict(f"app {app.name!r} has {MAX_HOOKS_PER_APP} hooks, the most it may; "
                       "delete one first (`dockyard app unhook`)")  # fmt: skip
    if req.stack not in {st.name for st in paas._stacks(s, app)}:
        raise NotFound(
            f"app {app.name!r} has no stack {req.stack!r}; create it first "
            f"(`dockyard stack create {app.name}/{req.stack} ...`)"
        )
    row = m.Hook(
        app_id=app.id,
        repo=req.repo,
        branch=req.branch,
        stack=req.stack,
        auto_deploy=req.auto_deploy,
        dockerfile=req.dockerfile,
        secret=req.secret or secrets.token_urlsafe(32),
        created_by=who.name,
    )
    s.add(row)
    s.flush()
    return hook_model(row).model_copy(update={"secret": row.secret})


def hook_model(row: m.Hook) -> wire.Hook:
    return wire.Hook(
        id=row.id,
        app=row.app.name,
        repo=row.repo,
        branch=row.branch,
        stack=row.stack,
        auto_deploy=row.auto_deploy,
        dockerfile=row.dockerfile,
        url=f"/v1/apps/{row.app.name}/hooks/git",
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _hooks(s: Session, app: m.App) -> list[m.Hook]:
    q = select(m.Hook).where(m.Hook.app_id == app.id).order_by(m.Hook.created_at, m.Hook.id)
    return list(s.scalars(q).unique())


def list_hooks(s: Session, who: Principal, app_key: str) -> list[wire.Hook]:
    return [hook_model(h) for h in _hooks(s, paas.get_app(s, who, app_key))]


def delete_hook(s: Session, who: Principal, app_key: str, hook_id: str) -> None:
    """Its builds stay (their history), with the repository they cloned."""
    app = paas.get_app(s, who, app_key)
    row = s.get(m.Hook, hook_id)
    if row is None or row.app_id != app.id:
        raise NotFound(f"app {app.name!r} has no hook {hook_id!r}; see `dockyard app hooks`")
    s.delete(row)
    s.flush()


# the webhook -----------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """A delivery whose signature verified: the hooks following its branch, and what
    it asks for (``answer`` set: nothing to queue, answer that)."""

    answer: wire.PushAccepted | None
    ping: bool = False
    hook_ids: tuple[str, ...] = ()
    push: webhooks.Push | None = None


def verify_push(
    s: Session, app_key: str, body: bytes, sig: webhooks.Signature | None, registry: bool
) -> Verified:
    """A git host's delivery to ``app_key`` (its id or name, in any project: the secret
    tells whose), checked in a read-only session (an unsigned flood must not hold the
    database's writers). Unauthorized when no hook of the app verifies it; BadRequest
    for a body that is not a push payload."""
    apps = list(s.scalars(select(m.App).where((m.App.id == app_key) | (m.App.name == app_key))))
    hooks = [h for a in apps for h in _hooks(s, a)]
    if not hooks:  # one answer for no app and no hooks: which apps exist stays unsaid
        return Verified(_ignored(f"no hook of app {app_key[:63]!r} takes deliveries", app_key))
    if sig is None:
        raise Unauthorized("sign the delivery: X-Hub-Signature-256 (GitHub) or X-Gitlab-Token")
    signed = [h for h in hooks if webhooks.verifies(sig, body, h.secret)]
    if not signed:
        raise Unauthorized("the delivery's signature matches no hook of this app; check the "
                           "secret the git host was given")  # fmt: skip
    try:
        push = webhooks.push_of(sig, json.loads(body))
    except (ValueError, RecursionError) as exc:  # json's JSONDecodeError too; deep nesting
        raise BadRequest(f"not a push payload: {str(exc)[:200]}") from exc
    if push.ignored:
        return Verified(_ignored(push.ignored, app_key), push.event == "ping")
    following = tuple(h.id for h in signed if h.branch == push.branch)
    if not following:
        return Verified(_ignored(f"no hook of {app_key!r} follows branch {push.branch!r}", app_key))
    if not registry:
        return Verified(_ignored(NO_REGISTRY, app_key))
    return Verified(None, False, following, push)


def queue_push(
    s: Session, verified: Verified, limits: Limits
) -> tuple[wire.PushAccepted, list[str]]:
    """The builds a verified push starts, one per hook following its branch; returns the
    answer and the hosts to wake. A commit a hook built already (a redelivery, a replay
    of an old push) starts nothing; older queued builds of the branch are superseded."""
    push = verified.push
    assert push is not None and push.branch is not None
    rows, woke, skipped = [], [], []
    for hook_id in verified.hook_ids:
        hook = s.get(m.Hook, hook_id)
        if hook is None:  # deleted since it verified
            continue
        seen = _built_already(s, hook, push.commit)
        if seen is not None:
            skipped.append(f"hook {hook.id[:8]} built commit {push.commit} already (build "
                           f"{seen}); `dockyard build start --ref` builds it again")  # fmt: skip
            continue
        _room_for_one_more(s, hook.app)
        row = _queue(s, hook, push.branch, push.commit, hook.auto_deploy, "push", push.pusher,
                     None, limits)  # fmt: skip
        woke += _supersede(s, hook, push.branch, row)
        rows.append(row)
    woke += build_runs.assign(s)
    log.info("push of %s: builds %s", push.commit, [r.id for r in rows])
    ignored = "; ".join(skipped) if skipped and not rows else None
    return wire.PushAccepted(builds=[r.id for r in rows], ignored=ignored), woke


def _built_already(s: Session, hook: m.Hook, commit: str | None) -> str | None:
    """The id of a build of ``commit`` through ``hook`` that did not fail, if any."""
    if commit is None:
        return None
    q = select(m.Build.id).where(
        m.Build.hook_id == hook.id,
        m.Build.commit == commit,
        m.Build.status.in_(["queued", "running", "succeeded"]),
    )
    return s.scalar(q.limit(1))


def _supersede(s: Session, hook: m.Hook, ref: str, newer: m.Build) -> list[str]:
    """Older builds of ``ref`` through ``hook`` that have not started are cancelled: the
    newer push is what its stack should get. Returns the hosts they were assigned to."""
    q = select(m.Build).where(
        m.Build.hook_id == hook.id,
        m.Build.ref == ref,
        m.Build.status == "queued",
        m.Build.id != newer.id,
    )
    woke = []
    for row in s.scalars(q.with_for_update(of=m.Build)).unique():
        if row.busy_host:
            woke.append(row.busy_host)
        build_runs.finish(row, wire.BuildStatus.cancelled, f"superseded by build {newer.id}")
    s.flush()
    return woke


def _room_for_one_more(s: Session, app: m.App) -> None:
    q = select(m.Build.id).where(m.Build.app_id == app.id, m.Build.status.in_(build_runs.ACTIVE))
    if len(list(s.scalars(q.limit(MAX_ACTIVE_BUILDS_PER_APP)))) >= MAX_ACTIVE_BUILDS_PER_APP:
        raise Conflict(
            f"app {app.name!r} has {MAX_ACTIVE_BUILDS_PER_APP} builds queued or running, the "
            "most it may; wait for them or cancel some (`dockyard build cancel`)"
        )


def _ignored(why: str, app_key: str) -> wire.PushAccepted:
    log.info("webhook of app %r ignored: %s", app_key[:63], why)
    return wire.PushAccepted(builds=[], ignored=why)


# builds ----------------------------------------------------------------------------


def _queue(
    s: Session,
    hook: m.Hook,
    ref: str,
    commit: str | None,
    deploy: bool,
    trigger: str,
    by: str,
    user_id: str | None,
    limits: Limits,
) -> m.Build:
    row = m.Build(
        app_id=hook.app_id,
        project_id=hook.app.project_id,
        hook_id=hook.id,
        repo=hook.repo,  # the registered repository, whatever a payload said
        ref=ref,
        commit=commit,
        dockerfile=hook.dockerfile,
        stack=hook.stack,
        auto_deploy=deploy,
        trigger=trigger,
        created_by=by,
        user_id=user_id,
        memory_mb=limits.memory_mb,
        timeout_seconds=limits.timeout_seconds,
    )
    s.add(row)
    s.flush()
    return row


def start(
    s: Session, who: Principal, app_key: str, req: wire.BuildStart, limits: Limits, registry: bool
) -> tuple[wire.Build, list[str]]:
    """A build of ``req.ref`` by hand, through the hook ``req.hook`` (or the app's
    only one); returns it and the hosts to wake. A commit id is built as a push of it
    to the hook's branch: its ref is that branch, and the build host refuses the
    commit unless it is on it (compute/clone.py). A name (a branch, a tag) is built
    as it is when the build host fetches it."""
    app = paas.get_app(s, who, app_key)
    if not registry:
        raise Conflict(NO_REGISTRY)
    hook = _hook_for(s, app, req.hook)
    _room_for_one_more(s, app)
    commit = req.ref if webhooks.SHA.match(req.ref) else None
    ref = hook.branch if commit is not None else req.ref
    deploy = hook.auto_deploy if req.deploy is None else req.deploy
    row = _queue(s, hook, ref, commit, deploy, "manual", who.name, who.user_id, limits)
    woke = build_runs.assign(s)
    return build_model(row), woke


def _hook_for(s: Session, app: m.App, hook_id: str | None) -> m.Hook:
    hooks = _hooks(s, app)
    if hook_id is not None:
        found = [h for h in hooks if h.id == hook_id]
        if not found:
            raise NotFound(f"app {app.name!r} has no hook {hook_id!r}; see "
                           f"`dockyard app hooks {app.name}`")  # fmt: skip
        return found[0]
    if not hooks:
        raise Conflict(
            f"app {app.name!r} has no hook to build from; register one "
            f"(`dockyard app hook {app.name} --repo URL --branch B --stack S`)"
        )
    if len(hooks) > 1:
        raise Conflict(f"app {app.name!r} has {len(hooks)} hooks; choose one with --hook ID "
                       f"(`dockyard app hooks {app.name}`)")  # fmt: skip
    return hooks[0]


def _visible(who: Principal) -> list[ColumnElement[bool]]:
    return [] if who.is_admin else [m.Build.project_id == who.project_id]


def get_row(s: Session, who: Principal, build_id: str) -> m.Build:
    """The build if ``who`` may see it; NotFound for another project's."""
    row = s.get(m.Build, build_id)
    if row is None or not (who.is_admin or row.project_id == who.project_id):
        raise NotFound(f"build {build_id!r} does not exist; see `dockyard build list`")
    return row


def get(s: Session, who: Principal, build_id: str) -> wire.Build:
    return build_model(get_row(s, who, build_id))


def list_builds(s: Session, who: Principal, app_key: str | None, limit: int) -> list[wire.Build]:
    """Newest first."""
    q = select(m.Build).where(*_visible(who))
    if app_key is not None:
        q = q.where(m.Build.app_id == paas.get_app(s, who, app_key).id)
    q = q.order_by(m.Build.created_at.desc(), m.Build.id).limit(limit)
    return [build_model(r) for r in s.scalars(q).unique()]


def cancel(s: Session, who: Principal, build_id: str) -> tuple[wire.Build, list[str]]:
    """A queued or running build ends cancelled (its order leaves its host's poll);
    returns it and the hosts to wake. A finished one: 409."""
    row = get_row(s, who, build_id)
    s.refresh(row, with_for_update={"of": m.Build})  # an agent's done may have just ended it
    if row.status not in (wire.BuildStatus.queued, wire.BuildStatus.running):
        raise Conflict(f"build {row.id} already {row.status}; nothing to cancel")
    host = row.busy_host
    build_runs.finish(row, wire.BuildStatus.cancelled, f"cancelled by {who.name}")
    s.flush()
    return build_model(row), [h for h in [host] if h] + build_runs.assign(s)


def build_model(row: m.Build) -> wire.Build:
    return wire.Build(
        id=row.id,
        app=row.app.name,
        project=row.project.name,
        hook=row.hook_id,
        repo=row.repo,
        ref=row.ref,
        commit=row.commit,
        stack=row.stack,
        auto_deploy=row.auto_deploy,
        status=wire.BuildStatus(row.status),
        reason=row.reason,
        host=row.host_name,
        image=row.image_name,
        tag=row.tag,
        digest=row.digest,
        deploy=row.deploy_id,
        trigger=row.trigger,
        created_by=row.created_by,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        seconds=dict(row.seconds or {}),
    )
