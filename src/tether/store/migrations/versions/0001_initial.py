"""The first schema: runs, state changes, logs, the resource ledger and limits.

Revision ID: 0001
Revises:
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(32)
NAME = sa.String(255)
STATE = sa.String(16)
STATE_NAME = sa.String(64)


def _run_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("parameters", sa.Text, nullable=True),
        sa.Column("tags", sa.Text, nullable=True),
        sa.Column("state_type", STATE, nullable=True),
        sa.Column("state_name", STATE_NAME, nullable=True),
        sa.Column("state_message", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("run_count", sa.Integer, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "flow_runs",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", NAME, nullable=False),
        sa.Column("parent_id", ID, nullable=True),
        *_run_columns(),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("start_time", sa.Double, nullable=True),
        sa.Column("end_time", sa.Double, nullable=True),
        sa.Column("updated", sa.Double, nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("host", NAME, nullable=True),
        sa.Column("heartbeat", sa.Double, nullable=True),
    )
    op.create_index("ix_flow_runs_parent_id", "flow_runs", ["parent_id"])
    op.create_index("ix_flow_runs_created", "flow_runs", ["created"])

    op.create_table(
        "task_runs",
        sa.Column("id", ID, primary_key=True),
        sa.Column("flow_run_id", ID, nullable=True),
        sa.Column("name", NAME, nullable=False),
        *_run_columns(),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("start_time", sa.Double, nullable=True),
        sa.Column("end_time", sa.Double, nullable=True),
        sa.Column("updated", sa.Double, nullable=True),
    )
    op.create_index("ix_task_runs_flow_run_id", "task_runs", ["flow_run_id"])

    op.create_table(
        "state_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("flow_run_id", ID, nullable=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("type", STATE, nullable=False),
        sa.Column("name", STATE_NAME, nullable=False),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("timestamp", sa.Double, nullable=False),
        sa.Column("run_count", sa.Integer, nullable=False),
    )
    op.create_index("ix_state_changes_flow_run_id", "state_changes", ["flow_run_id"])

    op.create_table(
        "logs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("flow_run_id", ID, nullable=True),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("timestamp", sa.Double, nullable=False),
    )
    op.create_index("ix_logs_flow_run_id", "logs", ["flow_run_id"])

    op.create_table(
        "resources",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scope_id", ID, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("flow_run_id", ID, nullable=True),
        sa.Column("host", NAME, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("pid_started", sa.String(32), nullable=True),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("setup_outcome", STATE, nullable=True),
        sa.Column("setup_error", sa.Text, nullable=True),
        sa.Column("setup_at", sa.Double, nullable=True),
        sa.Column("handle", sa.Text, nullable=True),
        sa.Column("reaper", sa.String(512), nullable=True),
        sa.Column("reaper_file", sa.Text, nullable=True),
        sa.Column("scope_outcome", STATE, nullable=True),
        sa.Column("cleanup_outcome", STATE, nullable=True),
        sa.Column("cleanup_error", sa.Text, nullable=True),
        sa.Column("cleanup_seconds", sa.Double, nullable=True),
        sa.Column("cleaned_at", sa.Double, nullable=True),
        sa.Column("heartbeat", sa.Double, nullable=True),
        sa.UniqueConstraint("scope_id", "host", "pid", name="uq_resources_scope_process"),
    )
    op.create_index("ix_resources_flow_run_id", "resources", ["flow_run_id"])

    op.create_table(
        "resource_uses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scope_id", ID, nullable=False),
        sa.Column("task_run_id", ID, nullable=False),
        sa.Column("timestamp", sa.Double, nullable=False),
    )
    op.create_index("ix_resource_uses_scope_id", "resource_uses", ["scope_id"])

    op.create_table(
        "limits",
        sa.Column("tag", NAME, primary_key=True),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("updated", sa.Double, nullable=False),
    )


def downgrade() -> None:
    for table in ("limits", "resource_uses", "resources", "logs", "state_changes", "task_runs", "flow_runs"):
        op.drop_table(table)
