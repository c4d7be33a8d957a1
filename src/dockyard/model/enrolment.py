"""Enrolment: the one-time join token an admin makes, and what a new host trades it for."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from dockyard.model.base import Name, Schema

JOIN_TOKEN_SECONDS = 3600


class JoinTokenCreate(Schema):
    host: Name
    availability_zone: Name = "nova"
    expires_in: int = Field(
        default=JOIN_TOKEN_SECONDS,
        ge=60,
        le=7 * 86400,
        description="seconds the token may be traded (1 minute to 7 days)",
    )


class JoinTokenCreated(Schema):
    host: str
    availability_zone: str
    token: str = Field(description="shown once; only its hash is stored")
    expires_at: datetime = Field(description="UTC")
    ca_hash: str | None = Field(
        description="sha256:<hex> of the CA's SubjectPublicKeyInfo; null: the server has no CA"
    )


class JoinRequest(Schema):
    token: str = Field(min_length=1, max_length=128)


class Joined(Schema):
    """The host's own agent token (long-lived) and the zone the admin chose."""

    host: str
    availability_zone: str
    token: str


class HostRemoved(Schema):
    """What ``host remove`` did: a host removed, or (for one that joined but never
    registered, or never joined) only its credentials revoked."""

    host: str
    registered: bool = Field(description="False: there was no host row, only credentials")
    agent_tokens_revoked: int
    join_tokens_revoked: int = Field(description="unused join tokens for this name")
    detail: str
