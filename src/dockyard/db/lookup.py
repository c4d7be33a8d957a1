"""Finding a project's resource by id or name, the same way for every noun."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from dockyard.errors import Conflict, NotFound

T = TypeVar("T")


def one(rows: Sequence[T], noun: str, key: str, listing: str) -> T:
    """The single row ``key`` named; NotFound pointing at ``listing`` when none (also
    for another project's, which the caller has filtered out), Conflict when a name
    is shared."""
    if not rows:
        raise NotFound(f"{noun} {key!r} does not exist; see `{listing}`")
    if len(rows) > 1:
        raise Conflict(f"{len(rows)} {noun}s are named {key!r}; use the {noun} id")
    return rows[0]
