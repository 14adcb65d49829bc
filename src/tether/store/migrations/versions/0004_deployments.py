"""Deployments and their scheduled times: one row per (deployment, scheduled time), created once.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.String(32)
NAME = sa.String(255)
STATE_NAME = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", NAME, primary_key=True),
        sa.Column("flow_name", NAME, nullable=False),
        sa.Column("entrypoint", sa.Text, nullable=False),
        sa.Column("parameters", sa.Text, nullable=True),
        sa.Column("tags", sa.Text, nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("version", NAME, nullable=True),
        sa.Column("schedules", sa.Text, nullable=False),
        sa.Column("schedule_key", sa.String(64), nullable=False),
        sa.Column("catchup", sa.String(16), nullable=False),
        sa.Column("overlap", sa.String(16), nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("planned_until", sa.Double, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("updated", sa.Double, nullable=False),
    )
    op.create_table(
        "deployment_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("deployment", NAME, nullable=False),
        sa.Column("scheduled_time", sa.Double, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("parameters", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("state_name", STATE_NAME, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("claimed_by", sa.String(255), nullable=True),
        sa.Column("claimed_at", sa.Double, nullable=True),
        sa.Column("lease", sa.Double, nullable=True),
        sa.Column("child_pid", sa.Integer, nullable=True),
        sa.Column("child_started", sa.String(32), nullable=True),
        sa.Column("flow_run_id", ID, nullable=True),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("started", sa.Double, nullable=True),
        sa.Column("ended", sa.Double, nullable=True),
        sa.UniqueConstraint("deployment", "scheduled_time", name="uq_deployment_runs_time"),
    )
    op.create_index("ix_deployment_runs_status", "deployment_runs", ["status"])
    op.create_index("ix_deployment_runs_flow_run_id", "deployment_runs", ["flow_run_id"])


def downgrade() -> None:
    op.drop_index("ix_deployment_runs_flow_run_id", "deployment_runs")
    op.drop_index("ix_deployment_runs_status", "deployment_runs")
    op.drop_table("deployment_runs")
    op.drop_table("deployments")
