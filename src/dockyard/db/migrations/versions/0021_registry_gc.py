"""registry garbage collection: a request that waits for pushes to end, and the
maintenance window during which no push is ordered

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-26 08:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0021"
down_revision = "0020"  # re-chained at merge
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_gc",
        sa.Column("url", sa.String(length=255), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=True),
        sa.Column("running_since", sa.DateTime(), nullable=True),
        sa.Column("postponed", sa.String(length=1024), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("url"),
    )


def downgrade() -> None:
    op.drop_table("registry_gc")
