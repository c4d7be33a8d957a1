"""The Alembic migrations build exactly the schema the models describe."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dockyard.db.models import Base
from dockyard.db.session import Database


def test_migrated_schema_matches_the_models(backend_db: Database):
    backend_db.migrate()
    with backend_db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
