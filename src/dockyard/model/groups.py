"""Server groups: a project's placement policy for a set of its instances."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from dockyard.model.base import Name, Schema


class GroupPolicy(StrEnum):
    """Hard policies refuse a host (scheduler filters); soft ones only prefer (weighers)."""

    anti_affinity = "anti-affinity"  # every member on its own host, or no placement
    affinity = "affinity"  # every member on the first member's host, or no placement
    soft_anti_affinity = "soft-anti-affinity"  # spread while hosts allow, then share
    soft_affinity = "soft-affinity"  # together while the host allows, then elsewhere


class ServerGroupCreate(Schema):
    name: Name
    policy: GroupPolicy


class ServerGroup(Schema):
    id: str
    name: str
    project: str
    policy: GroupPolicy
    members: list[str] = Field(default=[], description="names of its live instances")
    hosts: dict[str, list[str]] = Field(
        default={}, description="host -> names of the members placed there"
    )
    created_at: datetime
