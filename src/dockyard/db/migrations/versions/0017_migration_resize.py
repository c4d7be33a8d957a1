"""migration_resize: a migration that carries a resize (server resize --allow-migrate)

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-26 08:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("flavor_id", sa.String(length=36), nullable=True))
        batch.create_foreign_key("fk_migrations_flavor_id", "flavors", ["flavor_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.drop_constraint("fk_migrations_flavor_id", type_="foreignkey")
        batch.drop_column("flavor_id")
