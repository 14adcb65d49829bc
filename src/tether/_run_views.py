"""Read-only views of the engine's runs, shaped like Prefect's run objects.

User code asks about runs through Prefect's shapes: ``context.task_run.name`` in a
``cache_key_fn``, ``flow_run.parameters`` in a hook, ``FlowRunContext.get()``,
``prefect.runtime``. These views answer from the engine's `FlowRun` / `TaskRun`
without copying them (a view made early sees later states), and change nothing.

In a task body on a remote worker (process pool, Dask, Ray) the engine's runs are the
worker's small stand-ins, which know the runs' ids and names only; what they do not know
is answered empty (no parameters, no tags), never with an error.
"""

from __future__ import annotations

import datetime
import inspect
from typing import TYPE_CHECKING, Any

from tether._context import current_run
from tether._core import State
from tether._errors import MissingContextError

if TYPE_CHECKING:
    from tether._flow import FlowFunction
    from tether._engine._flow_run import FlowRun as EngineFlowRun
    from tether._task import Task
    from tether._engine._task_run import TaskRun as EngineTaskRun


def with_defaults(signature: inspect.Signature | None, parameters: dict[str, Any]) -> dict[str, Any]:
    """``parameters`` with the defaults of the parameters not given, in signature order, as
    Prefect reports a run's parameters (a template or ``flow_run.parameters`` sees them)."""
    if signature is None or len(parameters) == len(signature.parameters):
        return dict(parameters)
    bound = inspect.BoundArguments(signature, dict(parameters))  # type: ignore[arg-type]
    bound.apply_defaults()
    return dict(bound.arguments)


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)


class FlowRun:
    """One flow run, as Prefect's ``FlowRun`` object shows it (``.id``, ``.name``, ``.parameters``...)."""

    __slots__ = ("_run",)

    def __init__(self, run: EngineFlowRun) -> None:
        self._run = run

    @property
    def id(self) -> str:
        return self._run.record.id

    @property
    def name(self) -> str:
        return self._run.record.name

    @property
    def flow_name(self) -> str:
        return self._run.flow.name

    @property
    def parameters(self) -> dict[str, Any]:
        return with_defaults(getattr(self._run.flow, "signature", None), getattr(self._run, "parameters", None) or {})

    @property
    def tags(self) -> list[str]:
        return sorted(getattr(self._run.record, "tags", ()))

    @property
    def run_count(self) -> int:
        return getattr(self._run.record, "run_count", 1)

    @property
    def state(self) -> State:
        return self._run.record.state

    @property
    def state_name(self) -> str:
        return self._run.record.state.name

    @property
    def parent_flow_run_id(self) -> str | None:
        return getattr(self._run.record, "parent_id", None)

    @property
    def expected_start_time(self) -> datetime.datetime:
        history = getattr(self._run.record, "history", None)
        return _utc(history[0].timestamp) if history else datetime.datetime.now(datetime.timezone.utc)

    @property
    def start_time(self) -> datetime.datetime | None:
        running = next((s for s in getattr(self._run.record, "history", ()) if s.is_running()), None)
        return None if running is None else _utc(running.timestamp)

    def __repr__(self) -> str:
        return f"FlowRun(name={self.name!r}, id={self.id!r}, state={self.state!r})"


class TaskRun:
    """One task run, as Prefect's ``TaskRun`` object shows it (``.id``, ``.name``, ``.task_name``...)."""

    __slots__ = ("_run",)

    def __init__(self, run: EngineTaskRun) -> None:
        self._run = run

    @property
    def id(self) -> str:
        return self._run.record.id

    @property
    def name(self) -> str:
        return self._run.record.name

    @property
    def task(self) -> Task[Any]:
        return self._run.task

    @property
    def task_name(self) -> str:
        return self._run.task.name

    @property
    def flow_run_id(self) -> str | None:
        return getattr(self._run.record, "flow_run_id", None)

    @property
    def parameters(self) -> dict[str, Any]:
        return with_defaults(getattr(self._run.task, "signature", None), getattr(self._run, "parameters", None) or {})

    @property
    def tags(self) -> list[str]:
        return sorted(getattr(self._run.record, "tags", ()))

    @property
    def run_count(self) -> int:
        return getattr(self._run.record, "run_count", 1)

    @property
    def state(self) -> State:
        return self._run.record.state

    @property
    def state_name(self) -> str:
        return self._run.record.state.name

    def __repr__(self) -> str:
        return f"TaskRun(name={self.name!r}, id={self.id!r}, state={self.state!r})"


class FlowRunContext:
    """The flow run that code runs in: ``.flow``, ``.flow_run``, ``.parameters``."""

    __slots__ = ("flow", "flow_run", "parameters")

    def __init__(self, run: EngineFlowRun) -> None:
        self.flow: FlowFunction[Any] = run.flow
        self.flow_run = FlowRun(run)
        self.parameters = run.parameters

    @classmethod
    def get(cls) -> FlowRunContext | None:
        """The current flow run's context, or None outside any flow run."""
        ctx = current_run.get()
        return None if ctx is None else cls(ctx.flow_run)


class TaskRunContext:
    """The task run that code runs in: ``.task``, ``.task_run``, ``.parameters``.

    This is what a ``cache_key_fn`` receives as its first argument."""

    __slots__ = ("flow_run_context", "parameters", "task", "task_run")

    def __init__(self, run: EngineTaskRun, parameters: dict[str, Any] | None = None) -> None:
        self.task: Task[Any] = run.task
        self.task_run = TaskRun(run)
        self.parameters = run.parameters if parameters is None else parameters
        self.flow_run_context = FlowRunContext(run.flow_run)

    @property
    def flow_run(self) -> FlowRun:
        return self.flow_run_context.flow_run

    @classmethod
    def get(cls) -> TaskRunContext | None:
        """The current task run's context, or None outside any task run."""
        ctx = current_run.get()
        return None if ctx is None or ctx.task_run is None else cls(ctx.task_run)


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
        return TaskRunContext(ctx.task_run)
    return FlowRunContext(ctx.flow_run)
