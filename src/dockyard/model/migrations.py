"""Snapshots, migrations and drains as users see them (the API's and the CLI's)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from dockyard.model.base import Name, Schema


class SnapshotCreate(Schema):
    image: Name = Field(description="the new image's name")
    consistent: bool = Field(
        default=False,
        description="stop the instance for the commit, then start it again (a running "
        "instance is otherwise committed as it runs)",
    )


class MigrateRequest(Schema):
    host: Name | None = Field(default=None, description="the target; None: the scheduler picks")
    live: bool = Field(default=False, description="live migration (CRIU): refused with 501 here")


class MigrationInstance(Schema):
    id: str
    name: str


class Migration(Schema):
    """One move of an instance: status queued -> snapshotting -> starting -> finished,
    or error (the instance runs on the source again; ``reason`` says why)."""

    id: str
    instance: MigrationInstance
    kind: str = Field(description="migration | evacuation")
    status: str
    source: str
    target: str | None
    source_state: str = Field(description="the source's copy: kept (until the end), removed")
    user: str | None = None
    started_at: datetime
    stopped_at: datetime | None = Field(default=None, description="the source stopped it")
    resumed_at: datetime | None = Field(default=None, description="it runs again")
    finished_at: datetime | None = None
    downtime_s: float | None = Field(default=None, description="stopped_at to resumed_at")
    seconds: dict[str, float] = Field(
        default={}, description="where the time went: stop, commit, flatten, push, volumes, start"
    )
    snapshot_digest: str | None = None
    reason: str | None = None


class Unplaced(Schema):
    """An instance a drain left where it is, and why."""

    instance: MigrationInstance
    reason: str
    reasons: dict[str, str] = Field(default={}, description="each rejecting filter's verdict")


class DrainResult(Schema):
    host: str
    migrations: list[Migration]
    unplaced: list[Unplaced]
