"""named volumes: a project's ext4 images, each on one host once attached; volume quotas

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 01:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volumes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("size_mb", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name"),
    )
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_volumes_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_volumes_host_id"), ["host_id"], unique=False)
    with op.batch_alter_table("quotas", schema=None) as batch_op:
        batch_op.add_column(sa.Column("volumes", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("volume_gb", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quotas", schema=None) as batch_op:
        batch_op.drop_column("volume_gb")
        batch_op.drop_column("volumes")
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volumes_host_id"))
        batch_op.drop_index(batch_op.f("ix_volumes_project_id"))
    op.drop_table("volumes")
