"""tether: flows and tasks, Prefect-compatible, with resources that are correct by construction.

``import tether`` makes every public submodule reachable as an attribute
(``tether.limits.set(...)``, ``tether.runtime.flow_run.name``); the ones that pull in
heavy libraries or are rarely needed (`tether.sql`; `tether.cli`: click and rich;
`tether.ui`: the dashboard's Starlette app; `tether.variables` and `tether.blocks`: pydantic;
`tether.testing`) are imported on first access.
"""

import importlib
from typing import Any as _Any

from tether import (
    artifacts,
    cache_policies,
    client,
    concurrency,
    context,
    deployments,
    exceptions,
    flows,
    futures,
    limits,
    logging,
    resources,
    runners,
    runtime,
    schedules,
    states,
    store,
    task_runners,
    tasks,
    transactions,
    utilities,
)
from tether._annotations import allow_failure, quote
from tether._cache import task_input_hash
from tether._core import State
from tether._errors import (
    CannotCancel,
    CleanupError,
    DeploymentError,
    FlowRunTimeout,
    LimitIsZeroError,
    MissingContextError,
    ParameterError,
    ReaperNotFound,
    ResourceClosedError,
    RunNotFound,
    ScheduleError,
    SettingError,
    StoreError,
    TaskRunTimeout,
    TetherError,
    UnpicklableArgumentError,
    UnresolvedFailureError,
    UpstreamFailedError,
    UsageError,
    WorkerLost,
)
from tether._flow import FlowFunction, flow
from tether._futures import TaskFuture, TaskFutureList, as_completed, wait
from tether._graph import Flow, Parameter
from tether._logging import get_run_logger
from tether._resources import Resource, ResourceScope, resource, resource_manager
from tether._run_views import get_run_context
from tether._serve import serve
from tether._task import Task, tags, task, unmapped

_LAZY_SUBMODULES = frozenset({"blocks", "cli", "sql", "testing", "ui", "variables"})


def __getattr__(name: str) -> _Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"tether.{name}")
    raise AttributeError(f"module 'tether' has no attribute {name!r}")


__all__ = [
    "CannotCancel",
    "CleanupError",
    "DeploymentError",
    "Flow",
    "FlowFunction",
    "FlowRunTimeout",
    "LimitIsZeroError",
    "MissingContextError",
    "Parameter",
    "ParameterError",
    "ReaperNotFound",
    "Resource",
    "ResourceClosedError",
    "ResourceScope",
    "RunNotFound",
    "ScheduleError",
    "SettingError",
    "State",
    "StoreError",
    "Task",
    "TaskFuture",
    "TaskFutureList",
    "TaskRunTimeout",
    "TetherError",
    "UnpicklableArgumentError",
    "UnresolvedFailureError",
    "UpstreamFailedError",
    "UsageError",
    "WorkerLost",
    "allow_failure",
    "as_completed",
    "flow",
    "get_run_context",
    "get_run_logger",
    "quote",
    "resource",
    "resource_manager",
    "serve",
    "tags",
    "task",
    "task_input_hash",
    "unmapped",
    "wait",
]

__version__ = "0.1.0"
