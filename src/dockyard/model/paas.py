"""Apps, stacks, releases, deploys and endpoints: the PaaS's wire schemas.

App      a project's named set of stacks
Stack    identical instances of one release, in their own server group
Release  immutable: image (with its digest), env, config files, health check, flavor
Deploy   rolls a stack to a release (in-place or surge), rolled back when not healthy
         within the stack's progress deadline
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from dockyard.model.base import Name, Schema
from dockyard.model.health import Env, Files, HealthCheck

MAX_REPLICAS = 100
Budget = Annotated[
    str,
    Field(
        max_length=4,
        pattern=r"^(\d{1,3}|\d{1,3}%)$",
        description="a count (2) or a percentage of replicas (25%)",
    ),
]


class Strategy(StrEnum):
    in_place = "in-place"  # each instance rebuilt where it runs, IP and hostname kept
    surge = "surge"  # new instances first (new IPs), then the old removed


class Spread(StrEnum):
    soft = "soft"  # soft anti-affinity: different hosts while there are enough
    hard = "hard"  # anti-affinity: every instance on its own host, or no placement


class AppCreate(Schema):
    name: Name


class App(Schema):
    id: str
    name: str
    project: str
    stacks: list[str]
    created_at: datetime


class StackCreate(Schema):
    name: Name
    image: str = Field(max_length=63)
    flavor: str = Field(max_length=63)
    network: str = Field(max_length=63)
    replicas: int = Field(ge=0, le=MAX_REPLICAS)
    env: Env = {}
    files: Files = []
    health_check: HealthCheck | None = None
    port: int | None = Field(
        default=None, ge=1, le=65535, description="the port endpoints name (default: the check's)"
    )
    strategy: Strategy = Strategy.in_place
    max_unavailable: Budget = "1"
    max_surge: Budget = "1"
    spread: Spread = Spread.soft
    progress_deadline_s: int = Field(
        default=120, ge=1, le=86_400, description="a deploy step not ready by then rolls back"
    )

    @model_validator(mode="after")
    def _percentages(self) -> StackCreate:
        for name in ("max_unavailable", "max_surge"):
            text = getattr(self, name)
            if text.endswith("%") and int(text[:-1]) > 100:
                raise ValueError(f"{name} {text} is more than 100%; give at most 100%")
        return self


class DeployCreate(Schema):
    """A new release from the current one with these changes, rolled out."""

    image: str | None = Field(default=None, max_length=63, description="default: the same")
    env: Env | None = Field(default=None, description="replaces the environment when sent")
    files: Files | None = None
    health_check: HealthCheck | None = Field(
        default=None, description="sent as null: no check; not sent: the same"
    )


class RollbackRequest(Schema):
    to: int | None = Field(
        default=None, ge=1, le=2**31, description="a release number (default: the previous)"
    )


class ScaleRequest(Schema):
    replicas: int = Field(ge=0, le=MAX_REPLICAS)


class Release(Schema):
    number: int
    image: str
    digest: str | None = Field(description="the image's registry digest, else its sha256")
    flavor: str
    env: dict[str, str]
    files: list[str] = Field(description="the config files' paths")
    health_check: HealthCheck | None
    created_by: str
    created_at: datetime
    result: str = Field(description="pending, deploying, deployed, rolled-back, failed, superseded")


class Deploy(Schema):
    id: str
    stack: str
    kind: Literal["create", "deploy", "rollback", "auto-rollback"]
    from_release: int | None
    to_release: int
    status: Literal["running", "succeeded", "rolled-back", "failed"]
    reason: str | None
    created_by: str
    created_at: datetime
    finished_at: datetime | None


class StackMember(Schema):
    name: str
    id: str
    host: str | None
    ip: str | None
    release: int
    status: str
    task_state: str | None
    health: str | None = Field(description="starting, healthy, unhealthy; None: not known yet")
    ready: bool


class StackEvent(Schema):
    time: datetime
    message: str


class Stack(Schema):
    id: str
    app: str
    name: str
    replicas: int
    ready: int
    current_release: int | None = Field(description="the release the stack runs or rolls to")
    strategy: Strategy
    max_unavailable: str
    max_surge: str
    spread: Spread
    progress_deadline_s: int
    port: int | None
    network: str
    group: str
    deploy: Deploy | None = Field(description="the latest deploy")
    instances: list[StackMember]
    events: list[StackEvent] = []


class Endpoint(Schema):
    instance: str
    ip: str
    port: int | None


class Endpoints(Schema):
    """The stack's ready members; ``version`` changes whenever the list does."""

    version: str
    app: str
    stack: str
    port: int | None
    endpoints: list[Endpoint]
