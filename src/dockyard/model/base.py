"""What every wire schema shares: the Schema base with its bounds on every number
and string, the names and keys users type, and the state enums."""

from __future__ import annotations

import base64
import binascii
import math
import re
import typing
import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def _ssh_public_key(text: str) -> str:
    """One OpenSSH public key line: TYPE BASE64 [COMMENT], the blob naming the same TYPE.

    No control character anywhere (a newline would start a second authorized_keys
    line, which could carry ``command=`` or ``from=`` options of the tenant's choosing).
    """
    hint = "give the .pub file (one line: 'ssh-ed25519 AAAA... comment'), not the private key"
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise ValueError(
            f"the key contains the control character {bad!r}; send exactly one key per "
            "entry, on one line, without newlines or tabs"
        )
    parts = text.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ValueError(f"not an OpenSSH public key; {hint}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the key's base64 is damaged; {hint}") from exc
    size = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + size].decode(errors="replace") != parts[0]:
        raise ValueError(f"the key's blob is not a {parts[0]} key; {hint}")
    return " ".join(parts)


SshKey = Annotated[str, Field(max_length=16384), AfterValidator(_ssh_public_key)]
ProcessName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_.-]{1,63}$")]

Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9_.-]*[a-zA-Z0-9])?$",
        description="letters, digits, '-', '_' and '.'; starts and ends with a letter or digit",
    ),
]


# An instance path may not cover what the agent mounts (the /proc view, its files)
# nor the kernel's interfaces; a host path may not be the host's root itself.
RESERVED_INSTANCE_PATHS = ("/proc", "/sys", "/dev", "/run/dockyard")

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
BIG = 1 << 40  # a count or amount no cloud reaches; keeps sums of them far from overflow
MAX_MEMORY_MB = 1 << 30  # 1 PiB
MAX_DISK_GB = 1 << 30  # 1 EiB
MAX_KBIT = 1 << 32  # 4 Tbit/s
MAX_TEXT = 65536
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_scalars(value: Any) -> None:
    """Refuse what no column or wire format can hold, wherever it sits in ``value``.

    Integers outside the signed 64-bit range (databases overflow), non-finite
    floats, and strings with NUL, lone surrogates (not encodable as UTF-8) or more
    than MAX_TEXT characters. Nested models are skipped: they check their own
    fields. Iterative, so deep nesting cannot exhaust the stack. The error's
    ``at`` is the path inside ``value`` (``0``, ``labels.key``), for the 422.
    """
    if _plainly_fine(value):
        return  # the common case, checked without the walk: every field of every model
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, bool | BaseModel):
            continue
        problem = _problem(item)
        if problem:
            raise PydanticCustomError("out_of_bounds", problem, {"at": where.lstrip(".")})
        if isinstance(item, dict):
            for k, v in item.items():
                stack.append((k, where))
                stack.append((v, f"{where}.{_printable(k)}"))
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{where}.{i}") for i, v in enumerate(item))


def _plainly_fine(value: Any) -> bool:
    """``value`` passes the walk, decided by the cheapest tests: a scalar ``_scalar_fine``
    passes, or a flat list or tuple of them (lists of cores, keys, nested models)."""
    if isinstance(value, list | tuple):
        return all(_scalar_fine(v) for v in value)
    return _scalar_fine(value)


def _scalar_fine(value: Any) -> bool:
    """None, a bool, a nested model (it checks its own fields), an int inside 64 bits,
    a finite float, short ASCII text without NUL (no surrogate is ASCII), or another
    scalar (a datetime, a UUID). Containers and any other text: walk them."""
    if value is None or isinstance(value, bool | BaseModel):
        return True
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, str):
        return len(value) <= MAX_TEXT and value.isascii() and "\x00" not in value
    if isinstance(value, float):
        return math.isfinite(value)
    return not isinstance(value, dict | list | tuple)


def _problem(item: Any) -> str | None:
    if isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
        return "number out of range: integers must fit in 64 bits"
    if isinstance(item, float) and not math.isfinite(item):
        return "number out of range: must be finite"
    if not isinstance(item, str):
        return None
    if len(item) > MAX_TEXT:
        return f"text too long: at most {MAX_TEXT} characters"
    if "\x00" in item:
        return "text contains a NUL character; remove it"
    if _SURROGATE.search(item):
        return "text contains a lone UTF-16 surrogate; send valid Unicode"
    return None


def _printable(key: Any) -> str:
    return str(key).encode("utf-8", "backslashreplace").decode()[:40]


SchemaT = TypeVar("SchemaT", bound="Schema")


class Schema(BaseModel):
    """Base of every wire model: unknown fields refused, every scalar bounded,
    datetimes sent in UTC with an offset (SQLite hands them back naive)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        """After the field's own checks (so an ssh key's message wins), before any use."""
        check_scalars(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Role(StrEnum):
    admin = "admin"
    member = "member"
    reader = "reader"


class VmState(StrEnum):
    building = "building"
    active = "active"
    stopped = "stopped"
    error = "error"
    deleted = "deleted"


class TaskState(StrEnum):
    scheduling = "scheduling"
    spawning = "spawning"
    powering_on = "powering-on"
    powering_off = "powering-off"
    rebooting = "rebooting"
    deleting = "deleting"
    resizing = "resizing"
    snapshotting = "snapshotting"  # the agent commits and pushes the root fs (and volumes)
    migrating = "migrating"  # moving to another host (cold migration or evacuation)
    rebuilding = "rebuilding"  # the container made anew from a (new) image, identity kept


class PowerState(StrEnum):
    nostate = "nostate"
    running = "running"
    shutdown = "shutdown"
    crashed = "crashed"
    unknown = "unknown"  # its host is down: computed when read, never stored


def from_newer(model: type[SchemaT], data: Any) -> SchemaT:
    """``model`` from what a possibly newer peer sent: fields this version does not know
    are dropped (at every depth) before validation, everything known is checked as
    usual. Agents read the server's words this way, so a server upgraded before its
    agents does not stop them (a user's request, on the other hand, is refused when
    it holds an unknown field)."""
    try:  # a peer of the same version (the common case) sends nothing to drop
        return model.model_validate(data)
    except ValidationError as exc:
        if not any(e["type"] == "extra_forbidden" for e in exc.errors()):
            raise
    return model.model_validate(_known(model, data))


def _known(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    out = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key in data:
            out[key] = _known_value(field.annotation, data[key])
    return out


def _known_value(annotation: Any, value: Any) -> Any:
    """Recurse into nested models: ``M``, ``list[M]``, ``dict[str, M]``, and any of
    those inside a union (``M | None``, ``list[M] | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _known(annotation, value)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple) and args and isinstance(value, list):
        return [_known_value(args[0], v) for v in value]
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _known_value(args[1], v) for k, v in value.items()}
    if args and origin not in (list, tuple, dict):  # a union, Annotated, ...
        for arg in args:
            if _fits(arg, value):
                return _known_value(arg, value)
    return value


def _fits(annotation: Any, value: Any) -> bool:
    """Whether ``value`` has the shape of ``annotation`` (enough to pick a union's arm)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return isinstance(value, dict)
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        return isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict)
    return False
