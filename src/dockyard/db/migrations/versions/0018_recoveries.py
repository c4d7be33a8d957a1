"""evacuation and recovery: what an evacuation rebuilt from and lost, when the dead host
fenced it; recoveries (files read off a host's disk for an instance, by its agent)

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-26 07:50:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0018"
down_revision = "0017"  # re-chained at merge: 0017 (migration resize) came first
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("rebuilt_from", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("source_image_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("note", sa.String(length=1024), nullable=True))
        batch.add_column(sa.Column("fenced_at", sa.DateTime(), nullable=True))
    op.create_table(
        "recoveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("host_id", sa.String(length=36), nullable=False),
        sa.Column("path", sa.String(length=4096), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("error", sa.String(length=1024), nullable=True),
        sa.Column("user_name", sa.String(length=63), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"]),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_recoveries_instance_id", "recoveries", ["instance_id"])
    op.create_index("ix_recoveries_host_id", "recoveries", ["host_id"])


def downgrade() -> None:
    op.drop_index("ix_recoveries_host_id", "recoveries")
    op.drop_index("ix_recoveries_instance_id", "recoveries")
    op.drop_table("recoveries")
    with op.batch_alter_table("migrations") as batch:
        batch.drop_column("fenced_at")
        batch.drop_column("note")
        batch.drop_column("source_image_id")
        batch.drop_column("rebuilt_from")
