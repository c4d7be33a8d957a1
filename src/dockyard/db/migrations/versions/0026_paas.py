"""the PaaS: apps, stacks, releases, deploys, stack members and events

Revision ID: 0026
Revises: 0025
Create Date: 2026-11-26 14:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def _id(name: str = "id") -> sa.Column[str]:
    return sa.Column(name, sa.String(36), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "apps",
        _id(),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("project_id", "name"),
    )
    op.create_index("ix_apps_project_id", "apps", ["project_id"])
    op.create_table(
        "stacks",
        _id(),
        sa.Column("app_id", sa.String(36), sa.ForeignKey("apps.id"), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("network_id", sa.String(36), sa.ForeignKey("networks.id"), nullable=False),
        sa.Column(
            "server_group_id", sa.String(36), sa.ForeignKey("server_groups.id"), nullable=False
        ),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("max_unavailable", sa.String(4), nullable=False),
        sa.Column("max_surge", sa.String(4), nullable=False),
        sa.Column("spread", sa.String(8), nullable=False),
        sa.Column("progress_deadline_s", sa.Integer(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("release_id", sa.String(36), nullable=True),
        sa.Column("next_ordinal", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("app_id", "name"),
    )
    op.create_index("ix_stacks_app_id", "stacks", ["app_id"])
    op.create_table(
        "releases",
        _id(),
        sa.Column("stack_id", sa.String(36), sa.ForeignKey("stacks.id"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id"), nullable=True),
        sa.Column("image_name", sa.String(63), nullable=False),
        sa.Column("digest", sa.String(71), nullable=True),
        sa.Column("flavor_id", sa.String(36), sa.ForeignKey("flavors.id"), nullable=True),
        sa.Column("flavor_name", sa.String(63), nullable=False),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("health_check", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(63), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.UniqueConstraint("stack_id", "number"),
    )
    op.create_index("ix_releases_stack_id", "releases", ["stack_id"])
    op.create_table(
        "deploys",
        _id(),
        sa.Column("stack_id", sa.String(36), sa.ForeignKey("stacks.id"), nullable=False),
        sa.Column("running_stack_id", sa.String(36), nullable=True, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_release_id", sa.String(36), nullable=True),
        sa.Column("to_release_id", sa.String(36), sa.ForeignKey("releases.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1024), nullable=True),
        sa.Column("created_by", sa.String(63), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("progress_at", sa.DateTime(), nullable=False),
        sa.Column("ready_seen", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_deploys_stack_id", "deploys", ["stack_id"])
    op.create_table(
        "stack_members",
        sa.Column("instance_id", sa.String(36), sa.ForeignKey("instances.id"), primary_key=True),
        sa.Column("stack_id", sa.String(36), sa.ForeignKey("stacks.id"), nullable=False),
        sa.Column("release_id", sa.String(36), sa.ForeignKey("releases.id"), nullable=False),
        sa.Column(
            "from_release_id", sa.String(36), sa.ForeignKey("releases.id"), nullable=True
        ),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("heals", sa.Integer(), nullable=False),
        sa.Column("healed_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_stack_members_stack_id", "stack_members", ["stack_id"])
    op.create_table(
        "stack_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("stack_id", sa.String(36), sa.ForeignKey("stacks.id"), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("message", sa.String(1024), nullable=False),
    )
    op.create_index("ix_stack_events_stack_id", "stack_events", ["stack_id"])


def downgrade() -> None:
    for table in ("stack_events", "stack_members", "deploys", "releases", "stacks", "apps"):
        op.drop_table(table)
