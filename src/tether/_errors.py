"""The exceptions tether raises, all of them, drawn as a tree.

    TetherError
    ├── UsageError (also a TypeError)        misuse of the API: fix the call
    │   ├── ParameterError                   arguments do not fit the function's signature
    │   ├── MissingContextError              run-only API (get_run_logger) used outside a run
    │   ├── UnpicklableArgumentError         a value that cannot travel to a remote worker
    │   ├── LimitIsZeroError                 a task's tag has a concurrency limit of 0: it can never run
    │   ├── SettingError (also ValueError)   a TETHER_* environment variable that does not parse
    │   ├── ScheduleError (also ValueError)  a schedule that cannot be built (cron, interval, rrule)
    │   └── DeploymentError (also ValueError) a deployment that cannot be served as given
    ├── UpstreamFailedError                  a task's upstream did not complete
    ├── ResourceClosedError                  a resource's value used after its cleanup
    ├── CleanupError                         a resource's cleanup raised
    ├── UnresolvedFailureError               a submitted task failed and nobody looked
    ├── TaskRunTimeout / FlowRunTimeout (also TimeoutError)
    ├── WorkerLost                           the worker process that ran a call died or left
    ├── ReaperNotFound                       the reaper named in the resource ledger cannot be imported
    ├── CannotCancel                         a flow run `tether runs cancel` cannot cancel from here
    └── StoreError                           the run store cannot be opened or used
        ├── StoreSchemaError                 its schema is newer than this tether, or not tether's
        ├── StoreOff                         the store is switched off and something needs it
        ├── RunNotFound (also LookupError)   no flow run (or more than one) matches the id given
        ├── DeploymentNameTaken              a deployment of that name serves another flow
        ├── DeploymentNotFound (also LookupError)
        ├── VariableExists (also ValueError) Variable.set of an existing name without overwrite=True
        ├── BlockExists (also ValueError)    a block saved again without overwrite=True
        ├── BlockNotFound (also ValueError)  Block.load of a name nothing was saved under
        └── SecretKeyError                   the secrets key cannot be used, or is not the block's

    RunInterrupted (a BaseException, like KeyboardInterrupt)
    ├── TaskRunCancelled                     thrown into a running task when its flow is cancelled
    ├── TimeoutInterrupt                     thrown into a running task or flow body at its timeout
    └── Terminated (also SystemExit)         SIGTERM turned into cancellation

    tether._core's own, raised by the run-state kernel, which imports nothing of tether:
    UnfinishedRun                            State.result() of a run that is not final yet
    InvalidTransition (a RuntimeError)       a state change the state machine forbids (a bug)
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


class LimitIsZeroError(UsageError):
    """A task carries a tag whose limit is 0, so it can never run."""


class SettingError(UsageError, ValueError):
    """A ``TETHER_*`` environment variable has a value tether cannot use; the message says what it accepts."""


class ScheduleError(UsageError, ValueError):
    """A schedule that cannot be built as given (a bad cron string, interval, rrule or time zone)."""


class DeploymentError(UsageError, ValueError):
    """A deployment that cannot be served as given (its name, schedules or parameters)."""


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


class WorkerLost(TetherError):
    """The worker process that ran (or was to run) a call died, or left the cluster."""


class ReaperNotFound(TetherError):
    """The reaper named in the resource ledger cannot be imported."""


class StoreError(TetherError):
    """The run store cannot be opened or used. The message names the store and says how to fix it."""


class StoreSchemaError(StoreError):
    """The store's schema is one this version of tether cannot use."""


class RunNotFound(StoreError, LookupError):
    """No flow run (or more than one) matches the id given."""


class DeploymentNameTaken(StoreError):
    """A deployment of this name already serves another flow."""


class DeploymentNotFound(StoreError, LookupError):
    """No deployment has this name."""


class StoreOff(StoreError):
    """The store is switched off (``TETHER_STORE=off``) and something needs it."""


class VariableExists(StoreError, ValueError):
    """A variable of that name exists, and it was set without ``overwrite=True``."""


class BlockExists(StoreError, ValueError):
    """A block of that type and name is saved, and it was saved again without ``overwrite=True``."""


class BlockNotFound(StoreError, ValueError):
    """No block of that type and name is saved in the store."""


class SecretKeyError(StoreError):
    """The secrets key under ``$TETHER_HOME`` cannot be used, or is not the one a block was saved with."""


class CannotCancel(TetherError):
    """The flow run cannot be cancelled from here; the message says why and what to do.

    ``reason`` names the case for callers that act on it: ``final``, ``subflow``,
    ``other-host``, ``no-process``, ``gone``, ``reused``, ``no-handler``, ``not-permitted``.
    """

    def __init__(self, message: str, run_id: str, reason: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.reason = reason


class RunInterrupted(BaseException):
    """The run was interrupted from outside (cancellation)."""


class TaskRunCancelled(RunInterrupted):
    """Thrown into a running task when its flow run is cancelled."""


class TimeoutInterrupt(RunInterrupted):
    """Thrown into a running task's thread (or a flow body's) at its timeout; the run then ends
    ``TimedOut`` with a `TaskRunTimeout` (`FlowRunTimeout`).

    A BaseException, as what Prefect throws there is: an ``except Exception`` on its way, the
    body's own or the logging module's around a handler's ``emit`` (which prints "--- Logging
    error ---" and goes on), would swallow a `TaskRunTimeout`, and the body would run on past
    its timeout.
    """


class Terminated(RunInterrupted, SystemExit):
    """The process received SIGTERM while a flow ran; exits with status 143."""

    def __init__(self) -> None:
        super().__init__(143)
