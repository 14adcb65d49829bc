"""The exceptions tether raises.

    TetherError
    ├── UsageError (also a TypeError)        misuse of the API: fix the call
    │   ├── ParameterError                   arguments do not fit the function's signature
    │   ├── MissingContextError              run-only API (get_run_logger) used outside a run
    │   └── UnpicklableArgumentError         a value that cannot travel to a remote worker
    ├── UpstreamFailedError                  a task's upstream did not complete
    ├── ResourceClosedError                  a resource's value used after its cleanup
    ├── CleanupError                         a resource's cleanup raised
    ├── UnresolvedFailureError               a submitted task failed and nobody looked
    └── TaskRunTimeout / FlowRunTimeout (also TimeoutError)

    RunInterrupted (a BaseException, like KeyboardInterrupt)
    ├── TaskRunCancelled                     thrown into a running task when its flow is cancelled
    └── Terminated (also SystemExit)         SIGTERM turned into cancellation
"""

from __future__ import annotations


class TetherError(Exception):
    """Base of the errors tether raises on purpose."""


class UsageError(TetherError, TypeError):
    """The API was called in a way it does not support; the message says the right call."""


class ParameterError(UsageError):
    """Arguments that do not match a flow's or a task's signature."""


class MissingContextError(UsageError):
    """An API that needs a flow or task run (``get_run_logger()``) was used outside one."""


class UnpicklableArgumentError(UsageError):
    """A value that cannot be sent to a worker on another process or machine."""


class UpstreamFailedError(TetherError):
    """A task did not run because a task it depends on did not complete."""


class ResourceClosedError(TetherError):
    """A resource's value was used after the resource had been cleaned up."""


class CleanupError(TetherError):
    """A resource's cleanup raised; the original error is its ``__cause__``."""


class UnresolvedFailureError(TetherError):
    """A submitted task run failed and nothing resolved its future."""


class TaskRunTimeout(TetherError, TimeoutError):
    """A task run went past its ``timeout_seconds``."""


class FlowRunTimeout(TetherError, TimeoutError):
    """A flow run went past its ``timeout_seconds``."""


class RunInterrupted(BaseException):
    """The run was interrupted from outside (cancellation)."""


class TaskRunCancelled(RunInterrupted):
    """Thrown into a running task when its flow run is cancelled."""


class Terminated(RunInterrupted, SystemExit):
    """The process received SIGTERM while a flow ran; exits with status 143."""

    def __init__(self) -> None:
        super().__init__(143)
