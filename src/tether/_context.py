"""Where the engine keeps "the current run": context variables, and the event stream.

A worker thread sets `current_run` while it runs a task body, so
`get_run_logger()`, `tags()` and nested submissions know where they are.

The runs in a `RunContext` are the engine's (`tether._engine`), or a remote worker's
stand-ins for them, or a resource scope's owner on its cleanup thread. This module does
not name any of them: it declares the little that code below the engine may ask of a run
(`RunView`, `TaskRunView`), and each of those satisfies it by its shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from tether._core import EventStream
from tether._runtime import Part

if TYPE_CHECKING:
    from tether._futures import TaskFuture


class RecordView(Protocol):
    """What every run's record tells: its id and name (the engine's `RunRecord` tells more)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


class OptionsView(Protocol):
    """The options of a flow or a task that code below the engine reads (the engine's
    runs hold `_options.FlowOptions` / `TaskOptions`; a remote worker's, a stand-in)."""

    @property
    def name(self) -> str: ...

    @property
    def log_prints(self) -> bool | None:
        """Whether ``print`` goes to the run log (None on a task: as its flow says)."""


class RunView(Protocol):
    """What code below the engine needs of a flow run: its record, its flow's options and
    the user's flow object, and where a task called or submitted inside it goes
    (``task(...)``, ``task.submit(...)``)."""

    @property
    def record(self) -> RecordView: ...

    @property
    def options(self) -> OptionsView: ...

    @property
    def flow(self) -> object:
        """The object ``@flow`` made, as user code is handed it (``FlowRunContext.flow``)."""

    def submit_task(
        self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None, /
    ) -> TaskFuture[Any]: ...

    def call_task(
        self,
        task: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Iterable[Any] | None,
        return_state: bool,
        /,
    ) -> Any: ...


class TaskRunView(Protocol):
    """What code below the engine needs of a task run: its record, its task's options and
    the user's task object (its flow run is the context's)."""

    @property
    def record(self) -> RecordView: ...

    @property
    def options(self) -> OptionsView: ...

    @property
    def task(self) -> object:
        """The object ``@task`` made, as user code is handed it (``TaskRunContext.task``)."""


class RunContext:
    """What code running inside a flow or task can ask about its run."""

    __slots__ = ("flow_run", "task_run")

    def __init__(self, flow_run: RunView, task_run: TaskRunView | None = None) -> None:
        self.flow_run = flow_run
        self.task_run = task_run

    @property
    def log_prints(self) -> bool:
        if self.task_run is not None and self.task_run.options.log_prints is not None:
            return bool(self.task_run.options.log_prints)
        return bool(self.flow_run.options.log_prints)


current_run: ContextVar[RunContext | None] = ContextVar("tether_current_run", default=None)
current_tags: ContextVar[frozenset[str]] = ContextVar("tether_tags", default=frozenset())
# The Prefect 1 `Flow` graph being built by a `with Flow(...)` block, if any.
building_graph: ContextVar[Any] = ContextVar("tether_building_graph", default=None)
# The resource blocks the code is inside, innermost last.
open_blocks: ContextVar[tuple[Any, ...]] = ContextVar("tether_open_blocks", default=())

#: Every event of every run in this process goes through this stream (the runtime's).
events = Part("events", lambda runtime: EventStream())
