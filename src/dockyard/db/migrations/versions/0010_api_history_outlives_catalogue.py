"""deleted instances may outlive their flavor, image and network (nullable references)

Revision ID: 0010_api
Revises: 0009
Create Date: 2026-11-26 01:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0010_api"
down_revision = "0009"
branch_labels = None
depends_on = None

_COLUMNS = ("flavor_id", "image_id", "network_id")


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        for name in _COLUMNS:
            batch.alter_column(name, existing_type=sa.String(36), nullable=True)


def downgrade() -> None:
    # deleted instances whose catalogue object is gone cannot be kept with NOT NULL
    op.execute(
        "DELETE FROM instance_actions WHERE instance_id IN (SELECT id FROM instances "
        "WHERE flavor_id IS NULL OR image_id IS NULL OR network_id IS NULL)"
    )
    op.execute(
        "DELETE FROM instance_events WHERE instance_id IN (SELECT id FROM instances "
        "WHERE flavor_id IS NULL OR image_id IS NULL OR network_id IS NULL)"
    )
    op.execute(
        "DELETE FROM instances WHERE flavor_id IS NULL OR image_id IS NULL OR network_id IS NULL"
    )
    with op.batch_alter_table("instances") as batch:
        for name in _COLUMNS:
            batch.alter_column(name, existing_type=sa.String(36), nullable=False)
