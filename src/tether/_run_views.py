"""Read-only views of the engine's runs, shaped like Prefect's run objects.

User code asks about runs through Prefect's shapes: ``context.task_run.name`` in a
``cache_key_fn``, ``flow_run.parameters`` in a hook, ``FlowRunContext.get()``,
``prefect.runtime``. These views answer from the runs in the current `RunContext`, or
from the runs the engine hands them, without copying them (a view made early sees later
states), and change nothing. They know a run only through `_context`'s `RunView` and
`TaskRunView`; what the engine's runs tell beyond those (parameters, tags, history) is
read where it is there.

In a task body on a remote worker (process pool, Dask, Ray) the runs are the worker's
small stand-ins, which know the runs' ids and names only; what they do not know is
answered empty (no parameters, no tags), never with an error, except a state, which
only the flow process knows.
"""

from __future__ import annotations

import datetime
import inspect
from typing import Any

from tether._context import RecordView, RunView, TaskRunView, current_run
from tether._core import State
from tether._errors import MissingContextError


def with_defaults(signature: inspect.Signature | None, parameters: dict[str, Any]) -> dict[str, Any]:
    """``parameters`` with the defaults of the parameters not given, in signature order, as
    Prefect reports a run's parameters (a template or ``flow_run.parameters`` sees them)."""
    if signature is None or len(parameters) == len(signature.parameters):
        return dict(parameters)
    bound = inspect.BoundArguments(signature, dict(parameters))
    bound.apply_defaults()
    return dict(bound.arguments)


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)


def _state_of(record: RecordView) -> State:
    state: State | None = getattr(record, "state", None)  # the engine's `RunRecord` has one
    if state is None:
        raise AttributeError(
            f"The state of run {record.name!r} is not known here: in a task body on a remote "
            "worker only the run's id and name are. Read the state in the flow, from the "
            "task's future (future.state)."
        )
    return state


def _parameters_of(run: RunView | TaskRunView) -> dict[str, Any]:
    """The run's parameters as the engine holds them (the same dict), or none on a worker."""
    parameters: dict[str, Any] | None = getattr(run, "parameters", None)
    return {} if parameters is None else parameters


class FlowRun:
    """One flow run, as Prefect's ``FlowRun`` object shows it (``.id``, ``.name``, ``.parameters``...)."""

    __slots__ = ("_run",)

    def __init__(self, run: RunView) -> None:
        self._run = run

    @property
    def id(self) -> str:
        return self._run.record.id

    @property
    def name(self) -> str:
        return self._run.record.name

    @property
    def flow_name(self) -> str:
        return self._run.options.name

    @property
    def parameters(self) -> dict[str, Any]:
        return with_defaults(getattr(self._run.options, "signature", None), _parameters_of(self._run))

    @property
    def tags(self) -> list[str]:
        return sorted(getattr(self._run.record, "tags", ()))

    @property
    def run_count(self) -> int:
        return getattr(self._run.record, "run_count", 1)

    @property
    def state(self) -> State:
        return _state_of(self._run.record)

    @property
    def state_name(self) -> str:
        return _state_of(self._run.record).name

    @property
    def parent_flow_run_id(self) -> str | None:
        return getattr(self._run.record, "parent_id", None)

    @property
    def expected_start_time(self) -> datetime.datetime:
        history = getattr(self._run.record, "history", None)
        return _utc(history[0].time) if history else datetime.datetime.now(datetime.timezone.utc)

    @property
    def start_time(self) -> datetime.datetime | None:
        running = next((s for s in getattr(self._run.record, "history", ()) if s.is_running()), None)
        return None if running is None else _utc(running.time)

    def __repr__(self) -> str:
        return f"FlowRun(name={self.name!r}, id={self.id!r}, state={self.state!r})"


class TaskRun:
    """One task run, as Prefect's ``TaskRun`` object shows it (``.id``, ``.name``, ``.task_name``...)."""

    __slots__ = ("_run",)

    def __init__(self, run: TaskRunView) -> None:
        self._run = run

    @property
    def id(self) -> str:
        return self._run.record.id

    @property
    def name(self) -> str:
        return self._run.record.name

    @property
    def task(self) -> Any:
        """The `Task` (a stand-in naming it, on a remote worker)."""
        return self._run.task

    @property
    def task_name(self) -> str:
        return self._run.options.name

    @property
    def flow_run_id(self) -> str | None:
        return getattr(self._run.record, "flow_run_id", None)

    @property
    def parameters(self) -> dict[str, Any]:
        return with_defaults(getattr(self._run.options, "signature", None), _parameters_of(self._run))

    @property
    def tags(self) -> list[str]:
        return sorted(getattr(self._run.record, "tags", ()))

    @property
    def run_count(self) -> int:
        return getattr(self._run.record, "run_count", 1)

    @property
    def state(self) -> State:
        return _state_of(self._run.record)

    @property
    def state_name(self) -> str:
        return _state_of(self._run.record).name

    def __repr__(self) -> str:
        return f"TaskRun(name={self.name!r}, id={self.id!r}, state={self.state!r})"


class FlowRunContext:
    """The flow run that code runs in: ``.flow``, ``.flow_run``, ``.parameters``."""

    __slots__ = ("flow", "flow_run", "parameters")

    def __init__(self, run: RunView) -> None:
        self.flow: Any = run.flow  # the object @flow made (a stand-in naming it, on a remote worker)
        self.flow_run = FlowRun(run)
        self.parameters = _parameters_of(run)

    @classmethod
    def get(cls) -> FlowRunContext | None:
        """The current flow run's context, or None outside any flow run (a task called outside
        a flow runs with a host of its own that is no flow run: its record has no id)."""
        ctx = current_run.get()
        return None if ctx is None or ctx.flow_run.record.id is None else cls(ctx.flow_run)


class TaskRunContext:
    """The task run that code runs in: ``.task``, ``.task_run``, ``.parameters``.

    This is what a ``cache_key_fn`` receives as its first argument."""

    __slots__ = ("flow_run_context", "parameters", "task", "task_run")

    def __init__(
        self, run: TaskRunView, parameters: dict[str, Any] | None = None, flow_run: RunView | None = None
    ) -> None:
        self.task: Any = run.task  # the `Task` (a stand-in naming it, on a remote worker)
        self.task_run = TaskRun(run)
        self.parameters = _parameters_of(run) if parameters is None else parameters
        # Not given: the engine's task run knows its flow run (a worker's stand-in does not,
        # so the context's is passed for it).
        self.flow_run_context = FlowRunContext(getattr(run, "flow_run") if flow_run is None else flow_run)

    @property
    def flow_run(self) -> FlowRun:
        return self.flow_run_context.flow_run

    @classmethod
    def get(cls) -> TaskRunContext | None:
        """The current task run's context, or None outside any task run."""
        ctx = current_run.get()
        return None if ctx is None or ctx.task_run is None else cls(ctx.task_run, flow_run=ctx.flow_run)


def get_run_context() -> TaskRunContext | FlowRunContext:
    """The context of the task run, else the flow run, that code runs in."""
    ctx = current_run.get()
    if ctx is None:
        raise MissingContextError(
            "get_run_context() was called outside a flow or task run, so there is no run to "
            "describe. Call it inside a @flow or @task function, or use "
            "FlowRunContext.get() / TaskRunContext.get(), which return None outside a run."
        )
    if ctx.task_run is not None:
        return TaskRunContext(ctx.task_run, flow_run=ctx.flow_run)
    return FlowRunContext(ctx.flow_run)
