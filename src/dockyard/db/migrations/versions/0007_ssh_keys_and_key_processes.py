"""ssh keys on instances, key processes on images and instances, procview on images

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 17:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _json_list(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.JSON(), nullable=False, server_default=sa.text("'[]'"))


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(_json_list("key_processes"))
        batch.add_column(
            sa.Column("procview", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("instances") as batch:
        batch.add_column(_json_list("ssh_keys"))
        batch.add_column(_json_list("key_processes"))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("key_processes")
        batch.drop_column("ssh_keys")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("procview")
        batch.drop_column("key_processes")
