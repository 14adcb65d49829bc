"""The run store's tables, as SQLAlchemy Core metadata.

Queries and the writer use these objects; the Alembic migrations in
``migrations/versions`` create them, and a test checks that the two agree.
All times are seconds since the epoch (floats), taken on the machine that ran
the flow; parameters, tags and handles are JSON text, encoded by the writer. This module only describes the schema; it opens no connection.
"""

from __future__ import annotations

import sqlalchemy as sa

#: Every schema revision this code knows, oldest first. Add one per migration.
REVISIONS: tuple[str, ...] = ("0001", "0002", "0003", "0004", "0005", "0006")
#: The revision this code writes and reads.
HEAD = REVISIONS[-1]

metadata = sa.MetaData()

ID = sa.String(32)
NAME = sa.String(255)
STATE = sa.String(16)
STATE_NAME = sa.String(64)

flow_runs = sa.Table(
    "flow_runs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    #: The flow's name (filters, deployments); run_name: the run's own, NULL when it is the same.
    sa.Column("name", NAME, nullable=False),
    sa.Column("parent_id", ID, nullable=True, index=True),
    sa.Column("parameters", sa.Text, nullable=True),
    sa.Column("tags", sa.Text, nullable=True),
    sa.Column("state_type", STATE, nullable=True),
    sa.Column("state_name", STATE_NAME, nullable=True),
    sa.Column("state_message", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("run_count", sa.Integer, nullable=False, default=0),
    sa.Column("created", sa.Double, nullable=False, index=True),
    sa.Column("start_time", sa.Double, nullable=True),
    sa.Column("end_time", sa.Double, nullable=True),
    sa.Column("updated", sa.Double, nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("host", NAME, nullable=True),
    sa.Column("heartbeat", sa.Double, nullable=True),
    sa.Column("run_name", NAME, nullable=True),
)

task_runs = sa.Table(
    "task_runs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("flow_run_id", ID, nullable=True, index=True),
    #: The task's name (groups, filters); run_name: the run's own, NULL when it is the same.
    sa.Column("name", NAME, nullable=False),
    sa.Column("parameters", sa.Text, nullable=True),
    sa.Column("tags", sa.Text, nullable=True),
    sa.Column("state_type", STATE, nullable=True),
    sa.Column("state_name", STATE_NAME, nullable=True),
    sa.Column("state_message", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("run_count", sa.Integer, nullable=False, default=0),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("start_time", sa.Double, nullable=True),
    sa.Column("end_time", sa.Double, nullable=True),
    sa.Column("updated", sa.Double, nullable=True),
    sa.Column("run_name", NAME, nullable=True),
)

state_changes = sa.Table(
    "state_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", ID, nullable=False),
    sa.Column("flow_run_id", ID, nullable=True, index=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("type", STATE, nullable=False),
    sa.Column("name", STATE_NAME, nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("timestamp", sa.Double, nullable=False),
    sa.Column("run_count", sa.Integer, nullable=False, default=0),
)

logs = sa.Table(
    "logs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", ID, nullable=False),
    sa.Column("flow_run_id", ID, nullable=True, index=True),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("timestamp", sa.Double, nullable=False),
)

#: The resource ledger: one row per scope and process that set it up. The row is
#: written before setup runs (intent), then updated with what happened.
resources = sa.Table(
    "resources",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scope_id", ID, nullable=False),
    sa.Column("name", NAME, nullable=False),
    sa.Column("flow_run_id", ID, nullable=True, index=True),
    sa.Column("host", NAME, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    # When the process started (Linux clock ticks since boot), so a reused pid is not taken for the owner.
    sa.Column("pid_started", sa.String(32), nullable=True),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("setup_outcome", STATE, nullable=True),  # succeeded | failed; NULL while setting up
    sa.Column("setup_error", sa.Text, nullable=True),
    sa.Column("setup_at", sa.Double, nullable=True),
    sa.Column("handle", sa.Text, nullable=True),
    sa.Column("reaper", sa.String(512), nullable=True),  # "module:qualname"
    sa.Column("reaper_file", sa.Text, nullable=True),  # the module's file, for reapers defined in scripts
    sa.Column("scope_outcome", STATE, nullable=True),  # succeeded | failed: what cleanup was told
    # succeeded | failed (cleanup ran) | reaping | reaped | reap-failed | closed-by-hand; NULL: not closed
    sa.Column("cleanup_outcome", STATE, nullable=True),
    sa.Column("cleanup_error", sa.Text, nullable=True),
    sa.Column("cleanup_seconds", sa.Double, nullable=True),
    sa.Column("cleaned_at", sa.Double, nullable=True),
    sa.Column("heartbeat", sa.Double, nullable=True),
    sa.UniqueConstraint("scope_id", "host", "pid", name="uq_resources_scope_process"),
)

#: Which task runs used which resource scope.
resource_uses = sa.Table(
    "resource_uses",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scope_id", ID, nullable=False, index=True),
    sa.Column("task_run_id", ID, nullable=False),
    sa.Column("timestamp", sa.Double, nullable=False),
)

limits = sa.Table(
    "limits",
    metadata,
    sa.Column("tag", NAME, primary_key=True),
    sa.Column("capacity", sa.Integer, nullable=False),
    sa.Column("updated", sa.Double, nullable=False),
)

#: Who holds slot ``slot`` of a tag. The slot itself is a lock (`tether.store._slot_locks`):
#: a row whose lock nobody holds is left by a dead process, and readers drop it.
limit_slots = sa.Table(
    "limit_slots",
    metadata,
    sa.Column("tag", NAME, primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("process", ID, nullable=False),  # the holder's process token
    sa.Column("run_id", ID, nullable=True),
    sa.Column("task", NAME, nullable=True),
    sa.Column("host", NAME, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("acquired", sa.Double, nullable=False),
)

#: A process waiting for slots of a tag (how many runs), and where to wake it up. The row
#: goes when its wait ends; one whose process lock nobody holds is left by a dead process.
limit_waiters = sa.Table(
    "limit_waiters",
    metadata,
    sa.Column("tag", NAME, primary_key=True),
    sa.Column("process", ID, primary_key=True),
    sa.Column("channel", sa.String(512), nullable=False),
    sa.Column("host", NAME, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("waiting", sa.Integer, nullable=False),
    sa.Column("since", sa.Double, nullable=False),
)

#: A deployment: a flow, its parameters and schedules, served by ``tether serve``. ``planned_until``:
#: every scheduled time up to it has its row in ``deployment_runs`` (a changed schedule restarts it at now).
deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("flow_name", NAME, nullable=False),
    sa.Column("entrypoint", sa.Text, nullable=False),
    sa.Column("parameters", sa.Text, nullable=True),
    sa.Column("tags", sa.Text, nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("version", NAME, nullable=True),
    sa.Column("schedules", sa.Text, nullable=False),  # JSON list of schedules
    sa.Column("schedule_key", sa.String(64), nullable=False),
    sa.Column("catchup", sa.String(16), nullable=False),
    sa.Column("overlap", sa.String(16), nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("planned_until", sa.Double, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("updated", sa.Double, nullable=False),
)

#: One row per deployment and scheduled time (or requested run): it can be created only once, and
#: a run starts only by claiming it. Times are the database's clock, so machines agree.
deployment_runs = sa.Table(
    "deployment_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("deployment", NAME, nullable=False),
    sa.Column("scheduled_time", sa.Double, nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),  # schedule | manual
    sa.Column("parameters", sa.Text, nullable=True),  # a manual run's own, over the deployment's
    # scheduled | claimed | running | completed | failed | cancelled | crashed | skipped
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("state_name", STATE_NAME, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("claimed_by", sa.String(255), nullable=True),  # the serve process, as ProcessInfo JSON
    sa.Column("claimed_at", sa.Double, nullable=True),
    sa.Column("lease", sa.Double, nullable=True),  # renewed by the serve process while it holds the run
    sa.Column("child_pid", sa.Integer, nullable=True),
    sa.Column("child_started", sa.String(32), nullable=True),
    sa.Column("flow_run_id", ID, nullable=True, index=True),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("started", sa.Double, nullable=True),
    sa.Column("ended", sa.Double, nullable=True),
    sa.UniqueConstraint("deployment", "scheduled_time", name="uq_deployment_runs_time"),
)

#: Prefect's variables: named JSON values (``tether.variables.Variable``), shared by every run of the store.
variables = sa.Table(
    "variables",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),  # JSON
    sa.Column("tags", sa.Text, nullable=True),  # JSON list
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("updated", sa.Double, nullable=False),
)

#: Saved blocks (``tether.blocks``: ``Secret``), one per block type and name. ``data`` is the block's
#: JSON encrypted with the key under ``$TETHER_HOME`` (`tether.store._secrets`): never readable here.
blocks = sa.Table(
    "blocks",
    metadata,
    sa.Column("block_type", NAME, primary_key=True),
    sa.Column("name", NAME, primary_key=True),
    sa.Column("id", ID, nullable=False, unique=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("key_id", sa.String(16), nullable=False),  # which key encrypted it (for the error when it is another)
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("updated", sa.Double, nullable=False),
)

#: Artifacts (``tether.artifacts``): markdown, tables, links, progress, images, linked to the run that
#: made them. Artifacts sharing a key are its versions; ``data`` is the formatted payload, as JSON.
artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("key", NAME, nullable=True, index=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("data", sa.Text, nullable=True),
    sa.Column("flow_run_id", ID, nullable=True, index=True),
    sa.Column("task_run_id", ID, nullable=True),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("updated", sa.Double, nullable=False),
)
