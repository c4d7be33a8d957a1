"""Sessions keep the rows they load (db/session.py _hold); a SELECT ... FOR UPDATE must
still hand back what the row holds once locked, not what this session read before."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dockyard.db import models as m
from tests.api.conftest import _database


@pytest.mark.postgres
def test_a_row_locked_after_another_commit_shows_that_commit(tmp_path):
    db, drop = _database(tmp_path, "postgresql")
    try:
        m.Base.metadata.create_all(db.engine)
        with db.session() as s:
            s.add(m.Project(id="p", name="before"))
        with db.session() as a:
            held = a.get(m.Project, "p")  # read, then kept by the session
            assert held is not None and held.name == "before"
            with db.session() as b:  # another request renames it and commits
                b.get(m.Project, "p").name = "after"  # type: ignore[union-attr]
            locked = a.scalar(select(m.Project).where(m.Project.id == "p").with_for_update())
            assert locked is held and locked.name == "after"
    finally:
        db.engine.dispose()
        if drop:
            drop()
