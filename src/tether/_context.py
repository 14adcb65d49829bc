"""Where the engine keeps "the current run": context variables, and the event stream.

A worker thread sets `current_run` while it runs a task body, so
`get_run_logger()`, `tags()` and nested submissions know where they are.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from tether._core import EventStream

if TYPE_CHECKING:
    from tether._engine._flow_run import FlowRun
    from tether._engine._task_run import TaskRun


class RunContext:
    """What code running inside a flow or task can ask about its run."""

    __slots__ = ("flow_run", "task_run")

    def __init__(self, flow_run: FlowRun, task_run: TaskRun | None = None) -> None:
        self.flow_run = flow_run
        self.task_run = task_run

    @property
    def log_prints(self) -> bool:
        if self.task_run is not None and self.task_run.task.log_prints is not None:
            return bool(self.task_run.task.log_prints)
        return bool(self.flow_run.flow.log_prints)


current_run: ContextVar[RunContext | None] = ContextVar("tether_current_run", default=None)
current_tags: ContextVar[frozenset[str]] = ContextVar("tether_tags", default=frozenset())
# The Prefect 1 `Flow` graph being built by a `with Flow(...)` block, if any.
building_graph: ContextVar[Any] = ContextVar("tether_building_graph", default=None)
# The resource blocks the code is inside, innermost last.
open_blocks: ContextVar[tuple[Any, ...]] = ContextVar("tether_open_blocks", default=())

#: Every event of every run in this process goes through this stream.
events = EventStream()

