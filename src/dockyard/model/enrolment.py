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
