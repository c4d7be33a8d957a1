"""host lifecycle: why an admin disabled a host, and the agent's version

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26 04:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("disabled_reason", sa.String(255), nullable=True))
        batch.add_column(
            sa.Column("agent_version", sa.String(64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("agent_version")
        batch.drop_column("disabled_reason")
