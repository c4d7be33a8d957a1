"""moves: migration records (cold migration, evacuation) and snapshot images

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26 07:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("snapshot_of", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("layers", sa.Integer(), nullable=True))
        batch.create_index("ix_images_snapshot_of", ["snapshot_of"])
    op.create_table(
        "migrations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source_host_id", sa.String(length=36), nullable=False),
        sa.Column("target_host_id", sa.String(length=36), nullable=True),
        sa.Column("source_cores", sa.JSON(), nullable=False),
        sa.Column("source_state", sa.String(length=16), nullable=False),
        sa.Column("snapshot_digest", sa.String(length=71), nullable=True),
        sa.Column("volumes", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=True),
        sa.Column("user_name", sa.String(length=63), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.Column("resumed_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"]),
        sa.ForeignKeyConstraint(["source_host_id"], ["hosts.id"]),
        sa.ForeignKeyConstraint(["target_host_id"], ["hosts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_migrations_instance_id", "migrations", ["instance_id"])
    op.create_index("ix_migrations_source_host_id", "migrations", ["source_host_id"])
    op.create_index("ix_migrations_target_host_id", "migrations", ["target_host_id"])


def downgrade() -> None:
    op.drop_index("ix_migrations_target_host_id", "migrations")
    op.drop_index("ix_migrations_source_host_id", "migrations")
    op.drop_index("ix_migrations_instance_id", "migrations")
    op.drop_table("migrations")
    with op.batch_alter_table("images") as batch:
        batch.drop_index("ix_images_snapshot_of")
        batch.drop_column("layers")
        batch.drop_column("snapshot_of")
