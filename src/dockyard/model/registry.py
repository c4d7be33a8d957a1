"""Registries: the primary one and a pull-through cache per availability zone."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from dockyard.model.base import Name, Schema


class RegistryCreate(Schema):
    availability_zone: Name
    url: str = Field(
        max_length=255,
        pattern=r"^https?://([a-zA-Z0-9.-]+|\[[0-9a-fA-F:]+\])(:[0-9]{1,5})?/?$",
        description="http(s)://HOST[:PORT] of a Docker Distribution registry, no path",
    )

    @field_validator("url")
    @classmethod
    def _port(cls, url: str) -> str:
        try:
            urlsplit(url).port  # noqa: B018 - raises on a port out of range
        except ValueError as exc:
            raise ValueError(f"{url!r}: give a port from 1 to 65535") from exc
        host = (urlsplit(url).hostname or "").lower()
        if url.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
            raise ValueError(
                f"{url!r}: plain http only on loopback (hosts send their pull login to it); "
                "give its https:// URL (a certificate from the cloud's CA)"
            )
        return url.rstrip("/")


class Registry(Schema):
    availability_zone: str | None = Field(description="None: the primary, which images go to")
    url: str
    primary: bool = False
    garbage_collection: str | None = Field(
        default=None,
        description="the primary beside the server: a collection waiting (and for which "
        "pushes), running, or when the last one ended",
    )


class RegistryImage(Schema):
    """One repository:tag as a registry holds it (what the seed's registry page showed)."""

    repository: str
    tag: str
    digest: str
    size: int
    pushed: str | None = None
    image: str | None = Field(default=None, description="the Dockyard image it belongs to")


class RegistryImages(Schema):
    registry: str
    images: list[RegistryImage]


class RegistryLogin(Schema):
    """A registry login: the hosts' (in each desired instance, to pull) or the admins'
    (``dockyard registry login``, for ``docker login``). Any login may push: the
    registry's htpasswd checks who, not what."""

    registry: str | None = Field(default=None, description="HOST:PORT it is for (None: any)")
    username: str
    password: str = Field(repr=False)
