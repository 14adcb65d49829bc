"""Exceptions, under Prefect's module path ``prefect.exceptions``.

Every exception tether raises on purpose (`tether._errors` draws the tree), and Prefect's names for
the ones that mean the same: `PrefectException` is `TetherError`, `UpstreamTaskError`
is `UpstreamFailedError`, `FailedRun` / `CrashedRun` / `CancelledRun` are what a
state without an exception of its own raises, `TerminationSignal` is SIGTERM.
"""

from tether._core import InvalidTransition, RunCancelled, RunCrashed, RunFailed, UnfinishedRun
from tether._errors import (
    BlockExists,
    BlockNotFound,
    CannotCancel,
    CleanupError,
    DeploymentError,
    DeploymentNameTaken,
    DeploymentNotFound,
    FlowRunTimeout,
    LimitIsZeroError,
    MissingContextError,
    ParameterError,
    ReaperNotFound,
    ResourceClosedError,
    RunInterrupted,
    RunNotFound,
    ScheduleError,
    SecretKeyError,
    SettingError,
    StoreError,
    StoreOff,
    StoreSchemaError,
    TaskRunCancelled,
    TaskRunTimeout,
    Terminated,
    TetherError,
    TimeoutInterrupt,
    UnpicklableArgumentError,
    UnresolvedFailureError,
    UpstreamFailedError,
    UsageError,
    VariableExists,
    WorkerLost,
)

PrefectException = TetherError
UpstreamTaskError = UpstreamFailedError
FailedRun = RunFailed
CrashedRun = RunCrashed
CancelledRun = RunCancelled
TerminationSignal = Terminated
ParameterTypeError = ParameterError  # a flow parameter that does not validate against its type hint
SignatureMismatchError = ParameterError

__all__ = [
    "BlockExists",
    "BlockNotFound",
    "CancelledRun",
    "CannotCancel",
    "CleanupError",
    "CrashedRun",
    "DeploymentError",
    "DeploymentNameTaken",
    "DeploymentNotFound",
    "FailedRun",
    "FlowRunTimeout",
    "InvalidTransition",
    "LimitIsZeroError",
    "MissingContextError",
    "ParameterError",
    "ParameterTypeError",
    "PrefectException",
    "ReaperNotFound",
    "ResourceClosedError",
    "RunCancelled",
    "RunCrashed",
    "RunFailed",
    "RunInterrupted",
    "RunNotFound",
    "ScheduleError",
    "SecretKeyError",
    "SettingError",
    "SignatureMismatchError",
    "StoreError",
    "StoreOff",
    "StoreSchemaError",
    "TaskRunCancelled",
    "TaskRunTimeout",
    "Terminated",
    "TerminationSignal",
    "TetherError",
    "TimeoutInterrupt",
    "UnfinishedRun",
    "UnpicklableArgumentError",
    "UnresolvedFailureError",
    "UpstreamFailedError",
    "UpstreamTaskError",
    "UsageError",
    "VariableExists",
    "WorkerLost",
]
