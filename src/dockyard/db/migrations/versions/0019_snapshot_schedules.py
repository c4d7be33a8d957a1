"""periodic snapshots: an instance's schedule (every N seconds, keep K) and which
snapshot images it took

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-26 08:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0019"
down_revision = "0018"  # re-chained at merge if another 0019 lands first
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("snapshot_every", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("snapshot_keep", sa.Integer(), nullable=False, server_default="3")
        )
        batch.add_column(sa.Column("snapshot_last_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("images") as batch:
        batch.add_column(
            sa.Column("periodic", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("periodic")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("snapshot_last_at")
        batch.drop_column("snapshot_keep")
        batch.drop_column("snapshot_every")
