"""A run's own name next to its flow's or task's: ``flow_runs.run_name`` and ``task_runs.run_name``.

``name`` stays the flow's or task's name (what filters, deployments and groups use);
``run_name`` is the run's, from ``flow_run_name=`` or ``task_run_name=``, and NULL when it
is the same (most runs): readers take ``coalesce(run_name, name)``. Runs recorded before
this revision keep NULL, so they read as they did.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NAME = sa.String(255)


def upgrade() -> None:
    # A nullable column without a default: an ALTER TABLE that rewrites no row (SQLite, PostgreSQL, MariaDB).
    op.add_column("flow_runs", sa.Column("run_name", NAME, nullable=True))
    op.add_column("task_runs", sa.Column("run_name", NAME, nullable=True))


def downgrade() -> None:
    # SQLite drops a column only by copying the table: batch mode does that there.
    with op.batch_alter_table("task_runs") as batch:
        batch.drop_column("run_name")
    with op.batch_alter_table("flow_runs") as batch:
        batch.drop_column("run_name")
