"""A build's log: byte chunks appended by its agent at stated offsets, read by anyone
who may see the build from any offset on.

Appends are idempotent: a chunk sent again (the agent retried after a lost answer)
whose bytes are already stored adds only what lies beyond them. A chunk that would
leave a gap is refused (409, naming the offset to send from). At BUILD_LOG_MAX bytes
the log is cut: a last line says so and everything after is dropped.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.db import build_runs, builds
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import BadRequest, Conflict
from dockyard.model import builds as wire

READ_MAX = 1 << 20  # bytes one answer carries at most; the next read goes on from there


def append(s: Session, host: str, build_id: str, offset: int, data: bytes) -> bool:
    """Store ``data`` sent for byte ``offset`` of the running build's log; True when
    something new was stored (waiters to wake)."""
    row = build_runs._own(s, host, build_id)
    if row.log_cut:
        return False
    size = row.log_size
    if offset > size:
        raise Conflict(f"the log of build {build_id} has {size} bytes; send from offset {size}",
                       offset=size)  # fmt: skip
    new = data[size - offset :]
    if not new:
        return False  # all of it is stored already
    room = wire.BUILD_LOG_MAX - size
    if len(new) > room:
        cut = f"\n[the log was cut at {wire.BUILD_LOG_MAX} bytes: BUILD_LOG_MAX]\n"
        new, row.log_cut = new[:room] + cut.encode(), True
    s.add(m.BuildLogChunk(build_id=row.id, offset=size, data=new))
    row.log_size = size + len(new)
    s.flush()
    return True


def read(s: Session, who: Principal, build_id: str, offset: int) -> wire.BuildLog:
    """The log from byte ``offset`` on (at most READ_MAX bytes, whole characters)."""
    row = builds.get_row(s, who, build_id)
    if offset > row.log_size:
        raise BadRequest(f"the log of build {build_id} has {row.log_size} bytes; "
                         f"read from an offset up to that")  # fmt: skip
    first = s.scalar(
        select(func.max(m.BuildLogChunk.offset)).where(
            m.BuildLogChunk.build_id == row.id, m.BuildLogChunk.offset <= offset
        )
    )
    data = b""
    if first is not None:
        q = select(m.BuildLogChunk.data).where(
            m.BuildLogChunk.build_id == row.id, m.BuildLogChunk.offset >= first
        )
        for chunk in s.scalars(q.order_by(m.BuildLogChunk.offset)):
            data += chunk
            if len(data) - (offset - first) >= READ_MAX:
                break
        data = _whole(data[offset - first :][:READ_MAX])
    end = offset + len(data)
    finished = row.status not in build_runs.ACTIVE
    return wire.BuildLog(
        text=data.decode("utf-8", "replace"),
        offset=end,
        done=finished and end >= row.log_size,
        truncated=row.log_cut,
    )


def _whole(data: bytes) -> bytes:
    """``data`` without a UTF-8 character cut at its end (the next read starts there)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data
