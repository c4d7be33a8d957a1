"""Projects, users, tokens and quotas."""

from __future__ import annotations

from datetime import datetime

from pydantic import (
    Field,
)

from dockyard.model.base import BIG, Name, Role, Schema

# --- identity -----------------------------------------------------------------


class ProjectCreate(Schema):
    name: Name


class Project(Schema):
    id: str
    name: str


class UserCreate(Schema):
    name: Name
    project: Name = Field(description="project name")
    role: Role = Role.member


class User(Schema):
    id: str
    name: str
    project: str
    role: Role
    disabled: bool = Field(default=False, description="its tokens are refused until enabled")


class UserUpdate(Schema):
    """Admins: disable or enable a user (at once, on every server), or change its role."""

    disabled: bool | None = None
    role: Role | None = None


MAX_TOKEN_LIFETIME = 10 * 366 * 86400  # seconds


class TokenCreate(Schema):
    expires_in: int | None = Field(
        default=None,
        ge=60,
        le=MAX_TOKEN_LIFETIME,
        description="seconds until the token stops working; null = never",
    )


class TokenCreated(Schema):
    id: str | None = None
    token: str = Field(description="shown once; only its hash is stored")
    user: str | None = None
    host: str | None = None
    expires_at: datetime | None = Field(default=None, description="UTC; null = never")


QUOTA_RESOURCES = (
    "instances",
    "vcpus",
    "memory_mb",
    "dedicated_cores",
    "ips",
    "volumes",
    "volume_gb",
    "snapshots",
)


class Quota(Schema):
    """Per-project limits; None = unlimited."""

    instances: int | None = Field(default=None, ge=0, le=BIG)
    vcpus: int | None = Field(default=None, ge=0, le=BIG)
    memory_mb: int | None = Field(default=None, ge=0, le=BIG)
    dedicated_cores: int | None = Field(default=None, ge=0, le=BIG)
    ips: int | None = Field(default=None, ge=0, le=BIG)
    volumes: int | None = Field(default=None, ge=0, le=BIG, description="named volumes")
    volume_gb: int | None = Field(
        default=None, ge=0, le=BIG, description="sum of volume sizes, GiB"
    )
    snapshots: int | None = Field(
        default=None, ge=0, le=BIG, description="snapshot images the project keeps"
    )


class QuotaUsage(Schema):
    limit: int | None
    used: int


class ProjectQuota(Schema):
    project: str
    resources: dict[str, QuotaUsage]


class TokenInfo(Schema):
    id: str
    user: str | None
    host: str | None
    created_at: datetime
    expires_at: datetime | None = Field(default=None, description="UTC; null = never")


class AgentTokenCreate(Schema):
    host: Name
