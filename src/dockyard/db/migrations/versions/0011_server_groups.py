"""server groups: a project's placement policies, and the group an instance joined

Revision ID: 0011
Revises: 0010_api
Create Date: 2026-11-26 04:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0011"
down_revision = "0010_api"  # the head in main (0010_api)
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_groups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("policy", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name"),
    )
    with op.batch_alter_table("server_groups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_server_groups_project_id"), ["project_id"], unique=False
        )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("server_group_id", sa.String(length=36), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_instances_server_group_id"), ["server_group_id"], unique=False
        )
        batch_op.create_foreign_key(
            "fk_instances_server_group_id", "server_groups", ["server_group_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_constraint("fk_instances_server_group_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_instances_server_group_id"))
        batch_op.drop_column("server_group_id")
    with op.batch_alter_table("server_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_server_groups_project_id"))
    op.drop_table("server_groups")
