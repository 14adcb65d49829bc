"""Variables, saved blocks (secrets, encrypted) and artifacts: Prefect's run-level records.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.String(32)
NAME = sa.String(255)


def upgrade() -> None:
    op.create_table(
        "variables",
        sa.Column("name", NAME, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("tags", sa.Text, nullable=True),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("updated", sa.Double, nullable=False),
    )
    op.create_table(
        "blocks",
        sa.Column("block_type", NAME, primary_key=True),
        sa.Column("name", NAME, primary_key=True),
        sa.Column("id", ID, nullable=False, unique=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("updated", sa.Double, nullable=False),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("key", NAME, nullable=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("data", sa.Text, nullable=True),
        sa.Column("flow_run_id", ID, nullable=True),
        sa.Column("task_run_id", ID, nullable=True),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("updated", sa.Double, nullable=False),
    )
    op.create_index("ix_artifacts_key", "artifacts", ["key"])
    op.create_index("ix_artifacts_flow_run_id", "artifacts", ["flow_run_id"])


def downgrade() -> None:
    op.drop_index("ix_artifacts_flow_run_id", "artifacts")
    op.drop_index("ix_artifacts_key", "artifacts")
    op.drop_table("artifacts")
    op.drop_table("blocks")
    op.drop_table("variables")
