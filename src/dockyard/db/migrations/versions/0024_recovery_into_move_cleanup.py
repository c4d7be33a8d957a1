"""recovery into another instance: the target instance and the directory there;
a migration's registry leftovers deleted (when)

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-26 11:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recoveries") as batch:
        batch.add_column(sa.Column("into_instance_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("into_path", sa.String(length=4096), nullable=True))
        batch.create_foreign_key(
            "fk_recoveries_into_instance_id_instances", "instances", ["into_instance_id"], ["id"]
        )
        batch.create_index("ix_recoveries_into_instance_id", ["into_instance_id"])
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("registry_cleaned_at", sa.DateTime(), nullable=True))
    # moves that ended before this version keep what they pushed: their images may be in
    # a project's catalogue and in use; only moves from now on are cleaned up after
    op.execute("UPDATE migrations SET registry_cleaned_at = CURRENT_TIMESTAMP")


def downgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.drop_column("registry_cleaned_at")
    with op.batch_alter_table("recoveries") as batch:
        batch.drop_index("ix_recoveries_into_instance_id")
        batch.drop_constraint("fk_recoveries_into_instance_id_instances", type_="foreignkey")
        batch.drop_column("into_path")
        batch.drop_column("into_instance_id")
