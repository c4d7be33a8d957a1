"""instances: environment, config files, a health check and its last result, and a
rebuild sequence (the container made anew, identity kept) with what a failed rebuild
restores

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-26 14:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(
            sa.Column("env", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch.add_column(
            sa.Column("files", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch.add_column(sa.Column("health_check", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("health", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("rebuild_seq", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("rebuild_from", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        for name in ("rebuild_from", "rebuild_seq", "health", "health_check", "files", "env"):
            batch.drop_column(name)
