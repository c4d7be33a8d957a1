"""continuous integration: git hooks, builds and their logs

Revision ID: 0027
Revises: 0026
Create Date: 2026-11-26 17:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hooks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("app_id", sa.String(36), sa.ForeignKey("apps.id"), nullable=False),
        sa.Column("repo", sa.String(1024), nullable=False),
        sa.Column("branch", sa.String(255), nullable=False),
        sa.Column("stack", sa.String(63), nullable=False),
        sa.Column("auto_deploy", sa.Boolean(), nullable=False),
        sa.Column("dockerfile", sa.String(255), nullable=False),
        sa.Column("secret", sa.String(256), nullable=False),
        sa.Column("created_by", sa.String(63), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_hooks_app_id", "hooks", ["app_id"])
    op.create_table(
        "builds",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("app_id", sa.String(36), sa.ForeignKey("apps.id"), nullable=False),
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("hook_id", sa.String(36), nullable=True),
        sa.Column("repo", sa.String(1024), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("commit", sa.String(40), nullable=True),
        sa.Column("dockerfile", sa.String(255), nullable=False),
        sa.Column("stack", sa.String(63), nullable=True),
        sa.Column("auto_deploy", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(4096), nullable=True),
        sa.Column("host_name", sa.String(63), nullable=True),
        sa.Column("busy_host", sa.String(63), nullable=True, unique=True),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(36), nullable=True),
        sa.Column("image_name", sa.String(63), nullable=True),
        sa.Column("tag", sa.String(512), nullable=True),
        sa.Column("digest", sa.String(71), nullable=True),
        sa.Column("deploy_id", sa.String(36), nullable=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(63), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("seconds", sa.JSON(), nullable=False),
        sa.Column("log_size", sa.Integer(), nullable=False),
        sa.Column("log_cut", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_builds_app_id", "builds", ["app_id"])
    op.create_index("ix_builds_project_id", "builds", ["project_id"])
    op.create_index("ix_builds_status", "builds", ["status"])
    op.create_table(
        "build_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("build_id", sa.String(36), sa.ForeignKey("builds.id"), nullable=False),
        sa.Column("offset", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("build_id", "offset"),
    )
    op.create_index("ix_build_log_build_id", "build_log", ["build_id"])


def downgrade() -> None:
    op.drop_table("build_log")
    op.drop_table("builds")
    op.drop_table("hooks")
