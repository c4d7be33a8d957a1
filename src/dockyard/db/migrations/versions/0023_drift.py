"""consistency checks: each host's reported baseline and its instances' drift, and the
cluster's declared baseline values

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-26 11:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("baseline", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("baseline_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("instance_drift", sa.JSON(), nullable=True))
    op.create_table(
        "baseline_declared",
        sa.Column("item", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("item"),
    )


def downgrade() -> None:
    op.drop_table("baseline_declared")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("instance_drift")
        batch.drop_column("baseline_at")
        batch.drop_column("baseline")
