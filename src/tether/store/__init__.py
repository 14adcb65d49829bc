"""The run store: flow runs, task runs, every state change, logs, the resource ledger, limits,
variables, saved blocks (secrets, encrypted) and artifacts.

SQLite at ``$TETHER_HOME/tether.db`` (``TETHER_HOME`` defaults to ``~/.tether``), or
any SQLAlchemy URL in ``TETHER_DATABASE_URL`` (PostgreSQL). The engine calls
`enable()` when a flow starts and `flush()` when a top-level flow ends; the CLI
opens the store with `open_store()` and queries it.

This package records and reads; it does not run flows or decide their states.
"""

from tether._errors import (
    BlockExists,
    BlockNotFound,
    CannotCancel,
    DeploymentNameTaken,
    DeploymentNotFound,
    ReaperNotFound,
    RunNotFound,
    SecretKeyError,
    StoreError,
    StoreOff,
    StoreSchemaError,
    VariableExists,
)
from tether._known_secrets import forget_secrets, remember_secret, remember_secret_fields
from tether._settings import heartbeat_seconds
from tether.store._active import active_store, disable, enable, flush, recording_disabled
from tether.store._artifacts import ARTIFACT_TYPES, ArtifactTable, StoredArtifact, run_artifacts, table_rows
from tether.store._cancel import CancelSent, cancel_flow_run
from tether.store._crashed import CrashedRun
from tether.store._deployments import (
    Claimed,
    DeploymentSpec,
    DeploymentTable,
    ScheduledRun,
    StoredDeployment,
)
from tether.store._ledger import ProcessInfo, flow_process_gone
from tether.store._location import StoreLocation, configured_url, tether_home
from tether.store._migrate import unusable
from tether.store._queries import (
    DeploymentView,
    RunSummary,
    RunView,
    TaskLane,
    TaskRunView,
    change_token,
    deployment_views,
    drop_limit,
    find_flow_run,
    limit_views,
    run_log_lines,
    run_view,
    runs_page,
    set_deployment_paused,
    task_run_view,
)
from tether.store._reap import ReapResult, load_reaper, reap_orphans
from tether.store._recorder import StoreRecorder
from tether.store._records import LedgerEntry, RunDetail, StoredFlowRun, StoredLog, StoredStateChange, StoredTaskRun
from tether.store._redact import redact_parameters, redact_text, redact_value
from tether.store._secrets import BlockTable, SavedBlock, SecretsKey, secrets_key
from tether.store._slots import LimitView, SlotHolder, SlotTable, Waiter
from tether.store._store import Store, open_store
from tether.store._variables import StoredVariable, VariableTable, values_engine
from tether.store._worker_ledger import LedgerTarget, ledger_target, record_copy_step

__all__ = [
    "ARTIFACT_TYPES",
    "ArtifactTable",
    "BlockExists",
    "BlockNotFound",
    "BlockTable",
    "CancelSent",
    "CannotCancel",
    "Claimed",
    "CrashedRun",
    "DeploymentNameTaken",
    "DeploymentNotFound",
    "DeploymentSpec",
    "DeploymentTable",
    "DeploymentView",
    "LedgerEntry",
    "LedgerTarget",
    "LimitView",
    "ProcessInfo",
    "ReapResult",
    "ReaperNotFound",
    "RunDetail",
    "RunNotFound",
    "RunSummary",
    "RunView",
    "SavedBlock",
    "ScheduledRun",
    "SecretKeyError",
    "SecretsKey",
    "SlotHolder",
    "SlotTable",
    "Store",
    "StoreError",
    "StoreLocation",
    "StoreOff",
    "StoreRecorder",
    "StoreSchemaError",
    "StoredArtifact",
    "StoredDeployment",
    "StoredFlowRun",
    "StoredLog",
    "StoredStateChange",
    "StoredTaskRun",
    "StoredVariable",
    "TaskLane",
    "TaskRunView",
    "VariableExists",
    "VariableTable",
    "Waiter",
    "active_store",
    "cancel_flow_run",
    "change_token",
    "configured_url",
    "deployment_views",
    "disable",
    "drop_limit",
    "enable",
    "find_flow_run",
    "flow_process_gone",
    "flush",
    "forget_secrets",
    "heartbeat_seconds",
    "ledger_target",
    "limit_views",
    "load_reaper",
    "open_store",
    "reap_orphans",
    "record_copy_step",
    "recording_disabled",
    "redact_parameters",
    "redact_text",
    "redact_value",
    "remember_secret",
    "remember_secret_fields",
    "run_artifacts",
    "run_log_lines",
    "run_view",
    "runs_page",
    "secrets_key",
    "set_deployment_paused",
    "table_rows",
    "task_run_view",
    "tether_home",
    "unusable",
    "values_engine",
]
