"""Concurrency slots as locks that die with their holder, not leases; waiters by process.

A ``limit_slots`` row now says who holds slot N of a tag (the slot is a file lock or
an advisory lock); ``limit_waiters`` has one row per tag and waiting process, named
by the process's lock token. The old rows were leases and wake-up addresses of
processes that an older tether ran; they mean nothing to this one and are dropped.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.String(32)
NAME = sa.String(255)


def upgrade() -> None:
    op.drop_table("limit_waiters")
    op.drop_table("limit_slots")
    op.create_table(
        "limit_slots",
        sa.Column("tag", NAME, primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("process", ID, nullable=False),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("task", NAME, nullable=True),
        sa.Column("host", NAME, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("acquired", sa.Double, nullable=False),
    )
    op.create_table(
        "limit_waiters",
        sa.Column("tag", NAME, primary_key=True),
        sa.Column("process", ID, primary_key=True),
        sa.Column("channel", sa.String(512), nullable=False),
        sa.Column("host", NAME, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("waiting", sa.Integer, nullable=False),
        sa.Column("since", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("limit_waiters")
    op.drop_table("limit_slots")
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
