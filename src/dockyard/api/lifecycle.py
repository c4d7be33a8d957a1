"""Host and instance lifecycle for admins: disable/enable a host, reset an instance.

A disabled host takes no new instances (the scheduler's refusal names it and the
reason); its instances keep running. Whether a host is up is not set here: it is
computed on every read from its last heartbeat and ``--host-down-after``.
"""

from __future__ import annotations

from fastapi import APIRouter

from dockyard import model
from dockyard.api.deps import Admin, Db, Key, RequestId, Watch
from dockyard.db import hosts, lifecycle

router = APIRouter()


@router.post("/hosts/{name}/disable", tags=["hosts"])
def disable_host(name: Key, body: model.HostDisable, db: Db, _: Admin) -> model.Host:
    """No new instances on this host until it is enabled; say why (shown to others)."""
    with db.session() as s:
        return hosts.set_enabled(s, name, body.reason)


@router.post("/hosts/{name}/enable", tags=["hosts"])
def enable_host(name: Key, db: Db, _: Admin) -> model.Host:
    with db.session() as s:
        return hosts.set_enabled(s, name, None)


@router.post("/instances/{key}/reset-state", tags=["instances"])
def reset_state(
    key: Key, body: model.ResetState, who: Admin, db: Db, watch: Watch, rid: RequestId
) -> model.Instance:
    """Unstick an instance: clear its task_state and set vm_state (active or error).
    The open action ends as an error and a ``reset-state`` entry records who did it."""
    with db.session() as s:
        out, host = lifecycle.reset_state(s, who, key, model.VmState(body.vm_state), rid)
    watch.notify(host)
    watch.instances.notify(out.id)
    return out
