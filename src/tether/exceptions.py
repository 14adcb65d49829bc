"""Exceptions, under Prefect's module path ``prefect.exceptions``.

tether's own exceptions (see `tether._errors` for the tree) and Prefect's names for
the ones that mean the same: `PrefectException` is `TetherError`, `UpstreamTaskError`
is `UpstreamFailedError`, `FailedRun` / `CrashedRun` / `CancelledRun` are what a
state without an exception of its own raises, `TerminationSignal` is SIGTERM.
"""

from tether._core import RunCancelled, RunCrashed, RunFailed, UnfinishedRun
from tether._errors import (
    CleanupError,
    FlowRunTimeout,
    MissingContextError,
    ParameterError,
    ResourceClosedError,
    TaskRunCancelled,
    TaskRunTimeout,
    Terminated,
    TetherError,
    UnpicklableArgumentError,
    UnresolvedFailureError,
    UpstreamFailedError,
    UsageError,
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
    "CancelledRun",
    "CleanupError",
    "CrashedRun",
    "FailedRun",
    "FlowRunTimeout",
    "MissingContextError",
    "ParameterError",
    "ParameterTypeError",
    "PrefectException",
    "ResourceClosedError",
    "RunCancelled",
    "RunCrashed",
    "RunFailed",
    "SignatureMismatchError",
    "TaskRunCancelled",
    "TaskRunTimeout",
    "Terminated",
    "TerminationSignal",
    "TetherError",
    "UnfinishedRun",
    "UnpicklableArgumentError",
    "UnresolvedFailureError",
    "UpstreamFailedError",
    "UpstreamTaskError",
    "UsageError",
]
