"""Wire models of evacuation (a dead host's instances rebuilt elsewhere, the old
host fenced) and of offline data recovery (files read out of an instance's
writable layer or named volumes on a host, by its agent, even with dockerd down)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from dockyard.model.base import Schema

RECOVERY_MAX_BYTES = 128 << 20  # one recovery's tar; the server keeps it until fetched


class Evacuation(Schema):
    """One instance's evacuation: a row of the migrations table, kind evacuation."""

    id: str
    instance: str
    instance_id: str
    source: str
    target: str | None
    status: str = Field(description="starting (rebuilding on target), finished, or error")
    source_state: str = Field(
        description="what is left on the dead host: kept (its agent fences it and keeps its "
        "writable layer and volumes), released (an admin let it go; the agent removes it)"
    )
    fenced: bool = Field(description="the old host's agent reported it stopped, data kept")
    rebuilt_from: str = Field(description="the image (a snapshot, or its own) it restarted from")
    from_snapshot: bool
    note: str = Field(description="what the rebuild loses, and how to get it back")
    reason: str | None = None
    started_at: datetime
    finished_at: datetime | None = None


class Unplaced(Schema):
    instance: str
    reason: str


class EvacuationResult(Schema):
    host: str
    evacuations: list[Evacuation]
    unplaced: list[Unplaced] = Field(description="instances that fit nowhere, and why")


class RecoveryInto(Schema):
    instance: str = Field(min_length=1, max_length=63, description="name or id")
    path: str = Field(
        min_length=1,
        max_length=4096,
        pattern=r"^/[^\x00]*$",
        description="a directory inside that instance; the recovered file or directory "
        "lands in it under its own name (missing directories are made)",
    )


class RecoveryCreate(Schema):
    host: str = Field(max_length=63, description="the host whose disk holds the data")
    path: str = Field(
        min_length=1,
        max_length=4096,
        pattern=r"^/[^\x00]*$",
        description="absolute path inside the instance: a file or a directory (taken whole)",
    )
    into: RecoveryInto | None = Field(
        default=None,
        description="copy it into another instance's filesystem (any host, running or "
        "stopped) instead of keeping it for download",
    )


class Recovery(Schema):
    id: str
    instance: str
    host: str
    path: str
    status: str = Field(
        description="queued (the host's agent reads it), delivering (with into: the "
        "target's agent writes it), done, error, or expired (its files dropped a day "
        "after it was done)"
    )
    into: str | None = Field(default=None, description="INSTANCE:PATH it is copied into")
    size: int | None = None
    sha256: str | None = None
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


class RecoveryOrder(Schema):
    """For the agent: tar ``path`` of instance ``instance_id`` from what is on disk and
    PUT it to /v1/agent/recoveries/{id}/data. Carried out once per id."""

    id: str = Field(max_length=36)
    instance_id: str = Field(max_length=36)
    path: str = Field(max_length=4096)
    volumes: dict[str, str] = Field(
        default={}, description="mount target in the instance -> named volume id"
    )
    max_bytes: int = Field(default=RECOVERY_MAX_BYTES, ge=1, le=1 << 40)


class RecoveryDelivery(Schema):
    """For the target's agent: GET /v1/agent/recoveries/{id}/data (its sha256 checked)
    and write the tar into instance ``instance_id``'s filesystem under ``path``, an
    entry that already exists there refused; then POST .../delivered (or .../failure)."""

    id: str = Field(max_length=36)
    instance_id: str = Field(max_length=36)
    path: str = Field(max_length=4096)
    sha256: str = Field(max_length=64)


class RecoveryFailure(Schema):
    error: str = Field(max_length=1024)


class RecoveryOrders(Schema):
    """A host's queued recovery orders and their generation (0 while none is queued;
    the agent long-polls)."""

    generation: int
    orders: list[RecoveryOrder]
    deliveries: list[RecoveryDelivery] = Field(
        default=[], description="recovered files to write into an instance of this host"
    )
