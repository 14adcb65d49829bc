"""tether: flows and tasks, Prefect-compatible, with resources that are correct by construction."""

from tether._cache import task_input_hash
from tether._core import State
from tether._errors import (
    CleanupError,
    FlowRunTimeout,
    ParameterError,
    ResourceClosedError,
    TaskRunTimeout,
    TetherError,
    UnpicklableArgumentError,
    UnresolvedFailureError,
    UpstreamFailedError,
    UsageError,
)
from tether._flow import FlowFunction, flow
from tether._futures import TaskFuture, TaskFutureList, as_completed, wait
from tether._graph import Flow, Parameter
from tether._logging import get_run_logger
from tether._resources import Resource, ResourceScope, resource, resource_manager
from tether._task import Task, tags, task, unmapped

__all__ = [
    "CleanupError",
    "Flow",
    "FlowFunction",
    "FlowRunTimeout",
    "Parameter",
    "ParameterError",
    "Resource",
    "ResourceClosedError",
    "ResourceScope",
    "State",
    "Task",
    "TaskFuture",
    "TaskFutureList",
    "TaskRunTimeout",
    "TetherError",
    "UnpicklableArgumentError",
    "UnresolvedFailureError",
    "UpstreamFailedError",
    "UsageError",
    "as_completed",
    "flow",
    "get_run_logger",
    "resource",
    "resource_manager",
    "tags",
    "task",
    "task_input_hash",
    "unmapped",
    "wait",
]

__version__ = "0.1.0"
