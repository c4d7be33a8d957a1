"""Apps, stacks and their members, releases: the PaaS's rows (paas/README.md).

A stack's instances are ordinary instances of its project, created through the same
claim as ``server create`` (quota, scheduler, IPAM) into the stack's own server
group, and named APP-STACK-N. Everything a request asks for (a stack and all its
instances, a scale) happens in that request's transaction, so a refusal (quota, no
host) leaves nothing behind. Rollouts are db/deploys.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import catalog, groups, hosts, instances, lookup
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import Conflict, Unprocessable
from dockyard.model import paas
from dockyard.paas import rollout

EVENTS_SHOWN = 20
NAME_MAX = 63  # an instance's or a group's name
# a stack's name leaves room for members numbered up to this; past it, numbers are
# reused once free (a stack holds at most replicas + surge + those being deleted)
LONGEST_ORDINAL = 999


# apps -------------------------------------------------------------------------------


def create_app(s: Session, who: Principal, req: paas.AppCreate) -> paas.App:
    assert who.project_id is not None
    taken = f"an app named {req.name!r} already exists in this project; choose another"
    if _apps(s, who, req.name):
        raise Conflict(taken)
    row = m.App(name=req.name, project_id=who.project_id)
    s.add(row)
    try:
        s.flush()
    except IntegrityError as exc:  # a concurrent create of the same name
        raise Conflict(taken) from exc
    return app_model(s, row)


def _apps(s: Session, who: Principal, name: str | None = None) -> list[m.App]:
    q = select(m.App).order_by(m.App.created_at, m.App.name)
    if name is not None:
        q = q.where((m.App.name == name) | (m.App.id == name))
    if not who.is_admin:
        q = q.where(m.App.project_id == who.project_id)
    return list(s.scalars(q).unique())


def in_project(who: Principal, app: m.App) -> Principal:
    """``who`` acting in ``app``'s project: an admin's change to another project's app
    makes that project's instances and group, counted against its quota."""
    return who if who.project_id == app.project_id else replace(who, project_id=app.project_id)


def get_app(s: Session, who: Principal, name: str) -> m.App:
    return lookup.one(_apps(s, who, name), "app", name, "dockyard app list")


def list_apps(s: Session, who: Principal) -> list[paas.App]:
    return [app_model(s, a) for a in _apps(s, who)]


def delete_app(s: Session, who: Principal, name: str) -> list[str]:
    """Refused (409, naming them) while the app has stacks. Its hooks and builds go
    with it; returns the build hosts whose orders vanished (to wake)."""
    app = get_app(s, who, name)
    names = [st.name for st in _stacks(s, app)]
    if names:
        raise Conflict(
            f"app {app.name!r} still has stacks ({', '.join(names)}); delete them first "
            f"(`dockyard stack delete {app.name}/{names[0]}`)"
        )
    hosts = _forget_builds(s, app.id)
    s.delete(app)
    s.flush()
    return hosts


def _forget_builds(s: Session, app_id: str) -> list[str]:
    """An app's hooks, builds and their logs (db/builds.py), gone with it; returns the
    hosts whose build orders vanished."""
    busy = s.scalars(select(m.Build.busy_host).where(m.Build.app_id == app_id))
    hosts = [h for h in busy if h]
    ids = select(m.Build.id).where(m.Build.app_id == app_id).scalar_subquery()
    s.execute(delete(m.BuildLogChunk).where(m.BuildLogChunk.build_id.in_(ids)))
    s.execute(delete(m.Build).where(m.Build.app_id == app_id))
    s.execute(delete(m.Hook).where(m.Hook.app_id == app_id))
    return hosts


def app_model(s: Session, row: m.App) -> paas.App:
    return paas.App(
        id=row.id,
        name=row.name,
        project=row.project.name,
        stacks=[st.name for st in _stacks(s, row)],
        created_at=row.created_at,
    )


# deploys: the rows (db/deploys.py drives them) -----------------------------------------


def begin(
    s: Session,
    who: Principal,
    stack: m.Stack,
    kind: str,
    old: str | None,
    new: m.Release,
    now: datetime | None = None,
) -> m.Deploy:
    """A running deploy of ``stack`` to ``new``; the controller (api/deploys.py) takes
    it from here, its deadline counted from ``now`` (the controller's clock when it
    begins one). The unique ``running_stack_id`` refuses a second one."""
    refuse_if_running(s, stack, kind)
    row = m.Deploy(
        stack_id=stack.id,
        running_stack_id=stack.id,
        kind=kind,
        from_release_id=old,
        to_release_id=new.id,
        created_by=who.name,
        user_id=who.user_id,
        progress_at=now or m.now(),
    )
    s.add(row)
    stack.release_id = new.id
    new.result = "deploying"
    try:
        s.flush()
    except IntegrityError as exc:  # another server began one at the same moment
        raise Conflict(
            f"a deploy of {stack.app.name}/{stack.name} is running; wait for it"
        ) from exc
    return row


def running(s: Session, stack: m.Stack) -> m.Deploy | None:
    return s.scalar(select(m.Deploy).where(m.Deploy.running_stack_id == stack.id))


def refuse_if_running(s: Session, stack: m.Stack, what: str) -> None:
    d = running(s, stack)
    if d is not None:
        to = s.get(m.Release, d.to_release_id)
        raise Conflict(
            f"{'an' if d.kind[0] in 'aeiou' else 'a'} {d.kind} of {stack.app.name}/{stack.name} "
            "to release "
            f"{to.number if to else '?'} is running (started by {d.created_by}); wait for it "
            f"to end (`dockyard stack show {stack.app.name}/{stack.name}`) before this {what}",
            deploy=d.id,
        )


def deploy_model(s: Session, d: m.Deploy) -> paas.Deploy:
    to = s.get(m.Release, d.to_release_id)
    old = s.get(m.Release, d.from_release_id) if d.from_release_id else None
    stack = s.get(m.Stack, d.stack_id)
    return paas.Deploy(
        id=d.id,
        stack=f"{stack.app.name}/{stack.name}" if stack else d.stack_id,
        kind=d.kind,  # type: ignore[arg-type]
        from_release=old.number if old else None,
        to_release=to.number if to else 0,
        status=d.status,  # type: ignore[arg-type]
        reason=d.reason,
        created_by=d.created_by,
        created_at=d.created_at,
        finished_at=d.finished_at,
    )


def latest(s: Session, stack: m.Stack) -> paas.Deploy | None:
    q = select(m.Deploy).where(m.Deploy.stack_id == stack.id)
    row = s.scalar(q.order_by(m.Deploy.created_at.desc(), m.Deploy.id).limit(1))
    return deploy_model(s, row) if row else None


# stacks -----------------------------------------------------------------------------


def _stacks(s: Session, app: m.App) -> list[m.Stack]:
    q = select(m.Stack).where(m.Stack.app_id == app.id).order_by(m.Stack.name)
    return list(s.scalars(q).unique())


def get_stack(s: Session, who: Principal, app: str, stack: str, lock: bool = False) -> m.Stack:
    """``lock``: take the stack's row lock (PostgreSQL), so deploys, scales and the
    controller's passes on one stack take turns."""
    row = get_app(s, who, app)
    q = select(m.Stack).where(m.Stack.app_id == row.id, m.Stack.name == stack)
    if lock:
        q = q.with_for_update(of=m.Stack)
    found = list(s.scalars(q).unique())
    return lookup.one(found, "stack", f"{app}/{stack}", f"dockyard stack list {app}")


def create_stack(
    s: Session, who: Principal, app_name: str, req: paas.StackCreate, rid: str, weigh: float
) -> tuple[paas.Stack, list[str]]:
    """The stack, its server group, release 1 and its replicas, at once; returns the
    hosts whose agents to wake. A deploy of kind ``create`` waits for them to be ready."""
    app = get_app(s, who, app_name)
    if any(st.name == req.name for st in _stacks(s, app)):
        raise Conflict(f"stack {app.name}/{req.name} already exists; choose another name")
    longest = f"{app.name}-{req.name}-{LONGEST_ORDINAL}"
    if len(longest) > NAME_MAX:
        room = NAME_MAX - len(f"--{LONGEST_ORDINAL}")
        raise Unprocessable(
            f"instances of {app.name}/{req.name} would be named {app.name}-{req.name}-N, "
            f"up to {len(longest)} characters: longer than {NAME_MAX} characters; choose "
            f"shorter app or stack names (at most {room} characters together)"
        )
    network = catalog.network(s, req.network)
    policy = (
        model.GroupPolicy.anti_affinity
        if req.spread == paas.Spread.hard
        else model.GroupPolicy.soft_anti_affinity
    )
    group_name = _free_name(_taken_groups(s, app.project_id, app.name), f"{app.name}-{req.name}")
    if len(group_name) > NAME_MAX:  # only after hundreds of groups named so
        raise Conflict(f"no free server group name like {app.name}-{req.name}; delete some")
    group_req = model.ServerGroupCreate(name=group_name, policy=policy)
    group = groups.create(s, in_project(who, app), group_req)
    stack = m.Stack(
        app_id=app.id,
        name=req.name,
        network_id=network.id,
        server_group_id=group.id,
        replicas=req.replicas,
        strategy=req.strategy.value,
        max_unavailable=req.max_unavailable,
        max_surge=req.max_surge,
        spread=req.spread.value,
        progress_deadline_s=req.progress_deadline_s,
        port=req.port,
    )
    s.add(stack)
    s.flush()
    spec = {"env": req.env, "files": req.files, "health_check": req.health_check}
    release = new_release(s, who, stack, req.image, req.flavor, spec)
    stack.release_id = release.id
    woke = [add_member(s, who, stack, release, rid, weigh) for _ in range(req.replicas)]
    begin(s, who, stack, "create", None, release)
    event(s, stack, f"created by {who.name} with {req.replicas} replicas of release 1")
    return stack_model(s, stack), woke


def new_release(
    s: Session,
    who: Principal,
    stack: m.Stack,
    image_key: str,
    flavor_key: str,
    spec: dict[str, Any],
) -> m.Release:
    """The stack's next release: the image as it is now (its digest), the flavor, and
    ``spec``'s env, files (model.ConfigFile) and health check."""
    image = catalog.image(s, image_key, who)
    if image.status != "active":
        raise Conflict(f"image {image.name!r} is {image.status}; upload its rootfs first")
    flavor = catalog.flavor(s, flavor_key)
    last = s.scalar(select(func.max(m.Release.number)).where(m.Release.stack_id == stack.id))
    check = spec["health_check"]
    row = m.Release(
        stack_id=stack.id,
        number=(last or 0) + 1,
        image_id=image.id,
        image_name=image.name,
        digest=image.digest or (f"sha256:{image.sha256}" if image.sha256 else None),
        flavor_id=flavor.id,
        flavor_name=flavor.name,
        env=dict(spec["env"]),
        files=[f.model_dump() if hasattr(f, "model_dump") else dict(f) for f in spec["files"]],
        health_check=check.model_dump() if hasattr(check, "model_dump") else check,
        created_by=who.name,
    )
    s.add(row)
    s.flush()
    return row


def check_of(release: m.Release) -> model.HealthCheck | None:
    hc = release.health_check
    return model.HealthCheck.model_validate(hc) if hc else None


def add_member(
    s: Session,
    who: Principal,
    stack: m.Stack,
    release: m.Release,
    rid: str,
    weigh: float,
    healed_at: datetime | None = None,
) -> str:
    """One more instance of ``release`` in the stack, claimed as ``server create``
    does (quota, placement in the stack's group). Returns the host to wake.
    ``healed_at``: self-healing made it then (its clock: a spawn's time counts from it)."""
    if release.image_id is None or release.flavor_id is None:
        raise Conflict(
            f"release {release.number}'s image or flavor was deleted; deploy another release"
        )
    n, name = _member_name(s, stack)
    req = model.InstanceCreate(
        name=name,
        image=release.image_id,
        flavor=release.flavor_id,
        network=stack.network_id,
        group=stack.server_group_id,
        env=release.env,
        files=[model.ConfigFile.model_validate(f) for f in release.files],
        health_check=check_of(release),
    )
    inst, host = instances.create(s, in_project(who, stack.app), req, rid, weigh)
    s.add(
        m.StackMember(
            instance_id=inst.id,
            stack_id=stack.id,
            release_id=release.id,
            ordinal=n,
            healed_at=healed_at,
        )
    )
    s.flush()
    return host


def _member_name(s: Session, stack: m.Stack) -> tuple[int, str]:
    """APP-STACK-N: the stack's next number, skipping names a live instance of the
    project holds (a user's own, or those of app "a-b"'s stack "c" beside app "a"'s
    "b-c"), never retrying one; when the name would grow past NAME_MAX characters,
    the lowest free number instead. One query, at most as many tries as names taken."""
    prefix = f"{stack.app.name}-{stack.name}-"
    q = select(m.Instance.name).where(
        m.Instance.project_id == stack.app.project_id,
        m.Instance.deleted_at.is_(None),
        m.Instance.name.startswith(prefix, autoescape=True),
    )
    taken = set(s.scalars(q))
    first = stack.next_ordinal
    n = next(i for i in range(first, first + len(taken) + 1) if f"{prefix}{i}" not in taken)
    if len(f"{prefix}{n}") > NAME_MAX:
        n = next(i for i in range(1, len(taken) + 2) if f"{prefix}{i}" not in taken)
    if len(f"{prefix}{n}") > NAME_MAX:
        raise Conflict(
            f"{stack.app.name}/{stack.name} has no free instance name left ({prefix}N, "
            f"at most {NAME_MAX} characters): {len(taken)} are taken; delete instances "
            "named so, or scale down"
        )
    stack.next_ordinal = n + 1
    return n, f"{prefix}{n}"


def _taken_groups(s: Session, project_id: str, prefix: str) -> set[str]:
    q = select(m.ServerGroup.name).where(
        m.ServerGroup.project_id == project_id,
        m.ServerGroup.name.startswith(prefix, autoescape=True),
    )
    return set(s.scalars(q))


def _free_name(taken: set[str], name: str) -> str:
    """``name``, or ``name-2``, ``name-3``... the first not taken (a stack of app "a-b"
    named "c" holds the group "a-b-c" that app "a"'s stack "b-c" would have)."""
    return next(c for i in range(1, len(taken) + 2) if (c := _nth(name, i)) not in taken)


def _nth(name: str, i: int) -> str:
    return name if i == 1 else f"{name}-{i}"


def members(s: Session, stack: m.Stack) -> list[m.StackMember]:
    """The stack's live members by ordinal (a member deleted by hand is no longer one)."""
    q = select(m.StackMember).where(m.StackMember.stack_id == stack.id)
    rows = sorted(s.scalars(q).unique(), key=lambda r: r.ordinal)
    return [r for r in rows if r.instance.deleted_at is None]


def ready(inst: model.Instance) -> bool:
    """Running and healthy (without a check: running), with no task in flight."""
    if inst.task_state is not None or inst.status != "ACTIVE" or inst.power_state != "running":
        return False
    healthy = inst.health is not None and inst.health.status == "healthy"
    return inst.health_check is None or healthy


def planned(rows: list[m.StackMember]) -> list[rollout.Member]:
    """The members as the planner sees them. One being deleted on a host that is down
    is left out: gone as far as the stack is concerned (its delete ends when the host
    returns), it must not hold a deploy's end nor a surge's room."""
    out = []
    for r in rows:
        inst = instances.to_model(r.instance)
        leaving = inst.task_state == "deleting"
        host = r.instance.host
        if leaving and host is not None and not hosts.is_up(host):
            continue
        out.append(
            rollout.Member(
                r.instance_id,
                r.release_id,
                ready=ready(inst),
                busy=inst.task_state is not None,
                leaving=leaving,
            )
        )
    return out


def scale(
    s: Session, who: Principal, app: str, name: str, replicas: int, rid: str, weigh: float
) -> tuple[paas.Stack, list[str]]:
    """Create or delete instances of the current release now (refused while a deploy
    runs); a quota or placement refusal leaves the stack as it was."""
    stack = get_stack(s, who, app, name, lock=True)
    refuse_if_running(s, stack, "scale")
    release = s.get(m.Release, stack.release_id)
    assert release is not None
    rows = [r for r in members(s, stack) if r.instance.task_state != "deleting"]
    woke = [add_member(s, who, stack, release, rid, weigh) for _ in range(replicas - len(rows))]
    # fewest losses first: not-ready members, then the newest
    doomed = sorted(rows, key=lambda r: (ready(instances.to_model(r.instance)), -r.ordinal))
    for r in doomed[: max(0, len(rows) - replicas)]:
        _, host = instances.act(s, who, r.instance_id, "delete", rid)
        woke.append(host) if host else None
    event(s, stack, f"scaled from {stack.replicas} to {replicas} replicas by {who.name}")
    stack.replicas = replicas
    s.flush()
    return stack_model(s, stack), woke


def delete_stack(s: Session, who: Principal, app: str, name: str, rid: str) -> list[str]:
    """Delete its instances (their agents finish that), its group, releases, deploys
    and events. Returns the hosts to wake."""
    stack = get_stack(s, who, app, name, lock=True)
    woke = []
    for r in members(s, stack):
        if r.instance.task_state != "deleting":
            _, host = instances.act(s, who, r.instance_id, "delete", rid)
            woke += [host] if host else []
    s.flush()
    # the group goes now: an instance being deleted need no longer spread, and the
    # members deleted before (a scale down) keep their history, not the group
    group_id = stack.server_group_id
    s.execute(
        update(m.Instance)
        .where(m.Instance.server_group_id == group_id)
        .values(server_group_id=None)
    )
    for table in (m.StackMember, m.StackEvent, m.Deploy, m.Release):
        s.execute(delete(table).where(table.stack_id == stack.id))
    group = stack.server_group
    s.delete(stack)
    s.flush()
    s.delete(group)
    s.flush()
    return [h for h in woke if h]


def event(s: Session, stack: m.Stack, message: str, once: bool = False) -> None:
    """``once``: not when it is already the stack's last event (a retried refusal)."""
    message = message[:1024]
    if once:
        q = select(m.StackEvent.message).where(m.StackEvent.stack_id == stack.id)
        if s.scalar(q.order_by(m.StackEvent.id.desc()).limit(1)) == message:
            return
    s.add(m.StackEvent(stack_id=stack.id, message=message))


def release_model(row: m.Release) -> paas.Release:
    return paas.Release(
        number=row.number,
        image=row.image_name,
        digest=row.digest,
        flavor=row.flavor_name,
        env=row.env,
        files=[f["path"] for f in row.files],
        health_check=check_of(row),
        created_by=row.created_by,
        created_at=row.created_at,
        result=row.result,
    )


def releases(s: Session, who: Principal, app: str, name: str) -> list[paas.Release]:
    stack = get_stack(s, who, app, name)
    q = select(m.Release).where(m.Release.stack_id == stack.id).order_by(m.Release.number)
    return [release_model(r) for r in s.scalars(q)]


def list_stacks(s: Session, who: Principal, app: str) -> list[paas.Stack]:
    return [stack_model(s, st, events=False) for st in _stacks(s, get_app(s, who, app))]


def stack_model(s: Session, stack: m.Stack, events: bool = True) -> paas.Stack:
    q = select(m.Release.id, m.Release.number).where(m.Release.stack_id == stack.id)
    numbers: dict[str, int] = {str(i): int(n) for i, n in s.execute(q)}
    shown = []
    for r in members(s, stack):
        inst = instances.to_model(r.instance)
        shown.append(
            paas.StackMember(
                name=inst.name,
                id=inst.id,
                host=inst.host,
                ip=inst.ip,
                release=numbers.get(r.release_id, 0),
                status=inst.status,
                task_state=inst.task_state,
                health=inst.health.status if inst.health else None,
                ready=ready(inst),
            )
        )
    return paas.Stack(
        id=stack.id,
        app=stack.app.name,
        name=stack.name,
        replicas=stack.replicas,
        ready=sum(x.ready for x in shown),
        current_release=numbers.get(stack.release_id or ""),
        strategy=paas.Strategy(stack.strategy),
        max_unavailable=stack.max_unavailable,
        max_surge=stack.max_surge,
        spread=paas.Spread(stack.spread),
        progress_deadline_s=stack.progress_deadline_s,
        port=stack.port,
        network=stack.network.name,
        group=stack.server_group.name,
        deploy=latest(s, stack),
        instances=shown,
        events=_events(s, stack) if events else [],
    )


def _events(s: Session, stack: m.Stack) -> list[paas.StackEvent]:
    q = (
        select(m.StackEvent)
        .where(m.StackEvent.stack_id == stack.id)
        .order_by(m.StackEvent.id.desc())
        .limit(EVENTS_SHOWN)
    )
    return [paas.StackEvent(time=e.time, message=e.message) for e in reversed(list(s.scalars(q)))]


def endpoints(s: Session, who: Principal, app: str, name: str) -> paas.Endpoints:
    """The ready members' addresses, and a version that changes when they do."""
    stack = get_stack(s, who, app, name)
    release = s.get(m.Release, stack.release_id) if stack.release_id else None
    check = release.health_check if release else None
    port = stack.port or (check or {}).get("port")
    found = []
    for r in members(s, stack):
        inst = instances.to_model(r.instance)
        if ready(inst) and inst.ip:
            found.append(paas.Endpoint(instance=inst.name, ip=inst.ip, port=port))
    found.sort(key=lambda e: (e.ip, e.instance))
    text = json.dumps([e.model_dump() for e in found], sort_keys=True)
    version = hashlib.sha256(text.encode()).hexdigest()[:16]
    return paas.Endpoints(
        version=version, app=stack.app.name, stack=stack.name, port=port, endpoints=found
    )


def member_ids(s: Session, who: Principal, app: str, name: str) -> list[str]:
    """The instance ids a watch on the stack's endpoints waits on."""
    stack = get_stack(s, who, app, name)
    return [r.instance_id for r in members(s, stack)]
