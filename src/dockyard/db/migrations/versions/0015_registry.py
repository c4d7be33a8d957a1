"""images pushed to a registry (digest, registry URL); a pull-through cache per AZ

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26 04:45:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0015"
down_revision = "0014"  # the head in main when rebased (0014_host_lifecycle)
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("digest", sa.String(length=71), nullable=True))
        batch.add_column(sa.Column("registry_url", sa.String(length=255), nullable=True))
    op.create_table(
        "registries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("availability_zone", sa.String(length=63), nullable=False),
        sa.Column("url", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("availability_zone"),
    )


def downgrade() -> None:
    op.drop_table("registries")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("registry_url")
        batch.drop_column("digest")
