"""What a new task run's arguments hold: its upstreams, its resource scopes, its limited keys.

`ArgumentScan` walks a call's arguments once, for `FlowRun`, as it creates the task run.
It is an object, not a closure: a visitor that calls itself (for what ``allow_failure``
and ``opaque`` wrap) would be a reference cycle, left for the garbage collector, once per
argument of every task run submitted.
"""

from __future__ import annotations

from typing import Any

from tether._annotations import allow_failure, opaque, quote
from tether._arguments import walk
from tether._engine._task_run import TaskRun
from tether._errors import UsageError
from tether._futures import TaskFuture
from tether._options import TaskOptions
from tether._resources import ResourceScope
from tether._values import ValueRegistry

#: Values that hold nothing a walk enters (`tether._arguments.members`): only a resource's value can be one.
LEAVES = frozenset({type(None), bool, int, float, complex, str, bytes})


class ArgumentScan:
    """The futures (upstreams) and resource values (scopes, and their limited keys) in a
    task run's arguments, and the upstreams whose failure `allow_failure` lets it run after
    (``annotated``: with a None per ``allow_failure``, ``quote`` or ``opaque`` seen)."""

    __slots__ = ("annotated", "flow_run", "limited", "scopes", "task", "upstreams", "values")

    def __init__(self, flow_run: object, task: TaskOptions, scopes: list[ResourceScope],
                 values: ValueRegistry[ResourceScope]) -> None:
        self.flow_run = flow_run
        self.task = task
        self.values = values  # the flow run's runtime's resource values
        self.upstreams: list[TaskRun] = []
        self.scopes = scopes
        self.limited: list[str] = []
        self.annotated: list[TaskRun | None] = []

    def argument(self, value: Any) -> None:
        """Scan one argument."""
        if type(value) in LEAVES and self.values.scope_of(value) is None:
            return  # the common case (a number, a string): nothing to find
        walk(value, self.visit)

    def waited_for(self, value: Any) -> None:
        """Scan one item of ``wait_for``: its upstreams count, its resource values do not."""
        scopes, limited = self.scopes, self.limited
        self.scopes, self.limited = [], []
        try:
            walk(value, self.visit)
        finally:
            self.scopes, self.limited = scopes, limited

    def visit(self, node: Any) -> bool:
        if type(node) is TaskFuture:
            run: TaskRun = node._run  # type: ignore[assignment]  # a flow run's futures wrap its TaskRuns (no cast(): a call per future at submit)
            if run.flow_run is not self.flow_run:
                raise UsageError(
                    f"Task {self.task.name!r} got a future of task run {run.record.name!r} from another "
                    f"flow run ({run.flow_run.options.name!r}). Futures cannot cross flow runs: pass "
                    "the result instead (future.result())."
                )
            self.upstreams.append(run)
            return True
        scope = self.values.scope_of(node)
        if scope is None:
            kind = type(node)
            if kind is allow_failure:
                upstreams = self.upstreams
                before = len(upstreams)
                walk(node.value, self.visit)
                for run in upstreams[before:]:
                    run.observed = True  # its failure is handled by the downstream
                    self.annotated.append(run)
                self.annotated.append(None)
                return True
            if kind is quote or kind is opaque:
                self.annotated.append(None)
                if kind is opaque and type(node.value) is TaskFuture:
                    self.visit(node.value)  # an upstream, whose value is then passed unwalked
                return True  # passed as it is: nothing inside is looked at
            return False
        if scope not in self.scopes:
            self.scopes.append(scope)
        # Only runs that receive the value count against the resource's limit.
        if scope.limit_key is not None and scope.limit_key not in self.limited:
            self.limited.append(scope.limit_key)
        return True  # a resource's value is not taken apart, even when it is a container
