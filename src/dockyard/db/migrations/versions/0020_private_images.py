"""private images: an image belongs to a project (its snapshots, its migration images)
or to nobody (public, the admins' catalogue); names unique among public images and
within a project; a `snapshots` quota

Existing snapshot images (``snapshot_of`` set) move into their instance's project:
until now any tenant could list and boot them.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-26 08:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0020"
down_revision = "0019"  # re-chained at merge: 0019 (snapshot schedules) came first
branch_labels = None
depends_on = None

_PUBLIC = sa.text("project_id IS NULL")


def _drop_global_name_unique() -> None:
    """0001 made images.name unique without naming the constraint."""
    if op.get_bind().dialect.name == "sqlite":  # rebuilt: name the reflected constraint
        naming = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
        with op.batch_alter_table("images", naming_convention=naming, recreate="always") as b:
            b.drop_constraint("uq_images_name", type_="unique")
    else:
        op.drop_constraint("images_name_key", "images", type_="unique")


def upgrade() -> None:
    _drop_global_name_unique()
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("project_id", sa.String(length=36), nullable=True))
        batch.create_foreign_key("fk_images_project_id", "projects", ["project_id"], ["id"])
        batch.create_index("ix_images_project_id", ["project_id"])
        batch.create_unique_constraint("uq_images_project_name", ["project_id", "name"])
    op.create_index(
        "uq_images_public_name",
        "images",
        ["name"],
        unique=True,
        sqlite_where=_PUBLIC,
        postgresql_where=_PUBLIC,
    )
    op.execute(
        "UPDATE images SET project_id = (SELECT instances.project_id FROM instances "
        "WHERE instances.id = images.snapshot_of) WHERE snapshot_of IS NOT NULL"
    )
    with op.batch_alter_table("quotas") as batch:
        batch.add_column(sa.Column("snapshots", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Fails if two projects hold images of the same name: rename or delete one first."""
    with op.batch_alter_table("quotas") as batch:
        batch.drop_column("snapshots")
    op.drop_index("uq_images_public_name", table_name="images")
    with op.batch_alter_table("images") as batch:
        batch.drop_constraint("uq_images_project_name", type_="unique")
        batch.drop_index("ix_images_project_id")
        batch.drop_constraint("fk_images_project_id", type_="foreignkey")
        batch.drop_column("project_id")
        batch.create_unique_constraint("images_name_key", ["name"])
