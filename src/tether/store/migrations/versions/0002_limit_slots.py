"""Concurrency slots as leases, and the processes waiting for them.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(32)
NAME = sa.String(255)


def upgrade() -> None:
    op.create_table(
        "limit_slots",
        sa.Column("id", ID, primary_key=True),
        sa.Column("tag", NAME, nullable=False),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("task", NAME, nullable=True),
        sa.Column("host", NAME, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("acquired", sa.Double, nullable=False),
        sa.Column("expires", sa.Double, nullable=False),
    )
    op.create_index("ix_limit_slots_tag", "limit_slots", ["tag"])
    op.create_table(
        "limit_waiters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tag", NAME, nullable=False),
        sa.Column("channel", sa.String(512), nullable=False),
        sa.Column("host", NAME, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("waiting", sa.Integer, nullable=False),
        sa.Column("since", sa.Double, nullable=False),
    )
    op.create_index("ix_limit_waiters_tag", "limit_waiters", ["tag"])


def downgrade() -> None:
    op.drop_table("limit_waiters")
    op.drop_table("limit_slots")
