"""Prefect 1 graphs: ``with Flow("etl") as flow:`` builds nodes, ``flow.run()`` runs them.

Inside the block, calling a task adds a `Node` instead of running it, and a
``@resource_manager`` block adds a setup node and a cleanup node. `Flow.run`
executes the graph through the ordinary engine (a flow run whose body submits
every node in dependency order), so runners, limits, resources and the store
all apply. Unlike Prefect 1, cleanup also runs on Ctrl-C, SIGTERM and timeout.

Outcome rules for a resource block: nodes of the block with no upstream in the
block depend on setup; cleanup runs after every node of the block and every node
that takes the resource, whatever their outcome, and gets the first error;
cleanup is skipped when setup failed; a failed cleanup is reported but does not
fail the flow. The flow's state is decided by its terminal nodes.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable
from typing import Any

from tether._arguments import map_leaves
from tether._context import building_graph, current_run, open_blocks
from tether._core import Completed, Failed, State, StateType
from tether._errors import UpstreamFailedError, UsageError
from tether._flow import FlowFunction
from tether._futures import TaskFuture, TaskFutureList
from tether._resources import ResourceScope
from tether._task import Task, unmapped

_node_ids = itertools.count(1)


class Node:
    """A task call (or parameter, or resource step) in a graph; also the key of its result."""

    def __init__(self, graph: Flow, kind: str, name: str, task: Task[Any] | None = None,
                 args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> None:
        self.graph = graph
        self.kind = kind  # "task", "map", "parameter", "setup", "cleanup"
        self.name = name
        self.task = task
        self.args = args
        self.kwargs = kwargs or {}
        self.upstream: list[Node] = []
        self.blocks: tuple[_ResourceBlock, ...] = ()
        self.id = next(_node_ids)

    def data_upstream(self) -> list[Node]:
        found: list[Node] = []
        for value in list(self.args) + list(self.kwargs.values()):
            map_leaves(value, lambda leaf: found.append(leaf) if isinstance(leaf, Node) else None)
        return found

    def __repr__(self) -> str:
        return f"<Node {self.name!r} ({self.kind})>"

    # -- Prefect 1's task operators: each one adds a node that applies it --------------
    # `==` and `!=` stay identity, as in Prefect 1 (a node is a dict key of the flow's
    # results): use `is_equal` and `is_not_equal` for the node that compares values.

    def _apply(self, name: str, fn: Callable[..., Any], *args: Any) -> Node:
        graph = building_graph.get()
        if graph is not self.graph:
            raise UsageError(
                f"{name} of node {self.name!r} was used outside the 'with Flow({self.graph.name!r})' block that "
                "built it, so there is no graph to add its node to. Use the operator inside that block."
            )
        return graph.add_call(_OPERATORS[name, fn], args, {}, None)

    def __add__(self, other: Any) -> Node:
        return self._apply("Add", operator.add, self, other)

    def __radd__(self, other: Any) -> Node:
        return self._apply("Add", operator.add, other, self)

    def __sub__(self, other: Any) -> Node:
        return self._apply("Sub", operator.sub, self, other)

    def __rsub__(self, other: Any) -> Node:
        return self._apply("Sub", operator.sub, other, self)

    def __mul__(self, other: Any) -> Node:
        return self._apply("Mul", operator.mul, self, other)

    def __rmul__(self, other: Any) -> Node:
        return self._apply("Mul", operator.mul, other, self)

    def __truediv__(self, other: Any) -> Node:
        return self._apply("Div", operator.truediv, self, other)

    def __rtruediv__(self, other: Any) -> Node:
        return self._apply("Div", operator.truediv, other, self)

    def __floordiv__(self, other: Any) -> Node:
        return self._apply("FloorDiv", operator.floordiv, self, other)

    def __rfloordiv__(self, other: Any) -> Node:
        return self._apply("FloorDiv", operator.floordiv, other, self)

    def __mod__(self, other: Any) -> Node:
        return self._apply("Mod", operator.mod, self, other)

    def __rmod__(self, other: Any) -> Node:
        return self._apply("Mod", operator.mod, other, self)

    def __pow__(self, other: Any) -> Node:
        return self._apply("Pow", operator.pow, self, other)

    def __rpow__(self, other: Any) -> Node:
        return self._apply("Pow", operator.pow, other, self)

    def __and__(self, other: Any) -> Node:
        return self._apply("And", _and, self, other)

    def __rand__(self, other: Any) -> Node:
        return self._apply("And", _and, other, self)

    def __or__(self, other: Any) -> Node:
        return self._apply("Or", _or, self, other)

    def __ror__(self, other: Any) -> Node:
        return self._apply("Or", _or, other, self)

    def __gt__(self, other: Any) -> Node:
        return self._apply("GreaterThan", operator.gt, self, other)

    def __ge__(self, other: Any) -> Node:
        return self._apply("GreaterThanOrEqual", operator.ge, self, other)

    def __lt__(self, other: Any) -> Node:
        return self._apply("LessThan", operator.lt, self, other)

    def __le__(self, other: Any) -> Node:
        return self._apply("LessThanOrEqual", operator.le, self, other)

    def __getitem__(self, key: Any) -> Node:
        return self._apply("GetItem", operator.getitem, self, key)

    def is_equal(self, other: Any) -> Node:
        return self._apply("Equal", operator.eq, self, other)

    def is_not_equal(self, other: Any) -> Node:
        return self._apply("NotEqual", operator.ne, self, other)

    def not_(self) -> Node:
        return self._apply("Not", operator.not_, self)

    def and_(self, other: Any) -> Node:
        return self._apply("And", _and, self, other)

    def or_(self, other: Any) -> Node:
        return self._apply("Or", _or, self, other)


def _and(x: Any, y: Any) -> Any:
    return x and y  # Prefect 1's And: the values' truth, not a bitwise and


def _or(x: Any, y: Any) -> Any:
    return x or y


#: One task per operator, made once: each use adds a node of it (named as in Prefect 1).
_OPERATORS: dict[tuple[str, Callable[..., Any]], Task[Any]] = {}


def _operator_task(name: str, fn: Callable[..., Any]) -> Task[Any]:
    return Task(fn, name=name)


for _name, _fn in (
    ("Add", operator.add), ("Sub", operator.sub), ("Mul", operator.mul), ("Div", operator.truediv),
    ("FloorDiv", operator.floordiv), ("Mod", operator.mod), ("Pow", operator.pow), ("And", _and), ("Or", _or),
    ("GreaterThan", operator.gt), ("GreaterThanOrEqual", operator.ge), ("LessThan", operator.lt),
    ("LessThanOrEqual", operator.le), ("GetItem", operator.getitem), ("Equal", operator.eq),
    ("NotEqual", operator.ne), ("Not", operator.not_),
):
    _OPERATORS[_name, _fn] = _operator_task(_name, _fn)


class Parameter:
    """A flow parameter in a graph: ``Parameter("rows", default=10)``."""

    def __new__(cls, name: str, default: Any = None, required: bool = False) -> Any:
        graph = building_graph.get()
        if graph is None:
            raise UsageError(f"Parameter({name!r}) must be created inside a 'with Flow(...)' block.")
        node = graph._add(Node(graph, "parameter", name))
        node.kwargs = {"default": default, "required": required}
        return node


class _ResourceBlock:
    def __init__(self, scope: ResourceScope, setup: Node) -> None:
        self.scope = scope
        self.setup = setup
        self.cleanup: Node | None = None
        self.nodes: list[Node] = []


class Flow:
    """A Prefect 1 flow: a graph built in a ``with`` block and run with `run`."""

    def __init__(self, name: str, task_runner: Any = None, executor: Any = None) -> None:
        self.name = name
        self.nodes: list[Node] = []
        self.task_runner = task_runner or executor
        self._blocks: list[_ResourceBlock] = []
        self._open: list[_ResourceBlock] = []
        self._token: Any = None

    # -- building ----------------------------------------------------------------

    def __enter__(self) -> Flow:
        if building_graph.get() is not None:
            raise UsageError(f"'with Flow({self.name!r})' was opened inside another Flow's block; build one graph at a time.")
        self._token = building_graph.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        building_graph.reset(self._token)
        if self._open and exc_info[0] is None:
            raise UsageError(f"Flow {self.name!r} ended with the block of resource {self._open[-1].scope.name!r} still open.")

    def _add(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def _check(self, value: Any) -> None:
        def check(leaf: Any) -> Any:
            if isinstance(leaf, Node) and leaf.graph is not self:
                raise UsageError(
                    f"Node {leaf.name!r} belongs to Flow {leaf.graph.name!r} and cannot be used in Flow "
                    f"{self.name!r}. One 'with' block builds one flow: build the node again in this flow."
                )
            return leaf

        map_leaves(value, check)

    def add_call(self, task: Task[Any], args: tuple[Any, ...], kwargs: dict[str, Any], upstream_tasks: Iterable[Any] | None, kind: str = "task") -> Node:
        for value in list(args) + list(kwargs.values()) + list(upstream_tasks or []):
            self._check(value)
        node = self._add(Node(self, kind, task.name, task, args, kwargs))
        node.upstream = [self._node_of(u) for u in upstream_tasks or []]
        node.blocks = tuple(self._open)
        for block in self._open:
            block.nodes.append(node)
        if self._open:
            inner = self._open[-1]
            in_block = [u for u in node.data_upstream() + node.upstream if inner in u.blocks or u is inner.setup]
            if not in_block:
                node.upstream.append(inner.setup)
        return node

    def add_map(self, task: Task[Any], args: tuple[Any, ...], kwargs: dict[str, Any], upstream_tasks: Iterable[Any] | None) -> Node:
        return self.add_call(task, args, kwargs, upstream_tasks, kind="map")

    def _node_of(self, value: Any) -> Node:
        if isinstance(value, Node):
            return value
        if isinstance(value, Task):
            matches = [n for n in self.nodes if n.task is value]
            if len(matches) == 1:
                return matches[0]
            raise UsageError(f"Task {value.name!r} appears {len(matches)} times in Flow {self.name!r}; pass the node its call returned.")
        raise UsageError(f"upstream_tasks must hold nodes or tasks of Flow {self.name!r}, not {value!r}.")

    def open_resource(self, scope: ResourceScope) -> Node:
        for value in list(scope.args) + list(scope.kwargs.values()):
            self._check(value)
        setup = self._add(Node(self, "setup", f"{scope.name}.setup", args=scope.args, kwargs=scope.kwargs))
        setup.blocks = tuple(self._open)
        block = _ResourceBlock(scope, setup)
        setup.kwargs = dict(scope.kwargs)
        self._blocks.append(block)
        self._open.append(block)
        return setup

    def close_resource(self, scope: ResourceScope) -> None:
        if not self._open or self._open[-1].scope is not scope:
            raise UsageError(f"The block of resource {scope.name!r} was closed in Flow {self.name!r}, which did not open it.")
        block = self._open.pop()
        block.cleanup = self._add(Node(self, "cleanup", f"{scope.name}.cleanup"))
        block.cleanup.upstream = [block.setup, *block.nodes]

    def set_dependencies(self, task: Any, upstream_tasks: Iterable[Any] = ()) -> None:
        self._node_of(task).upstream.extend(self._node_of(u) for u in upstream_tasks)

    # -- running -------------------------------------------------------------------

    def _ordered(self) -> list[Node]:
        order: list[Node] = []
        state: dict[Node, int] = {}

        def visit(node: Node, path: list[Node]) -> None:
            if state.get(node) == 2:
                return
            if state.get(node) == 1:
                cycle = " -> ".join(n.name for n in path[path.index(node):] + [node])
                raise UsageError(f"Flow {self.name!r} has a cycle: {cycle}. Remove one of these dependencies.")
            state[node] = 1
            for upstream in node.upstream + node.data_upstream():
                visit(upstream, path + [node])
            state[node] = 2
            order.append(node)

        for node in self.nodes:
            visit(node, [])
        return order

    def run(self, parameters: dict[str, Any] | None = None, task_runner: Any = None, executor: Any = None, **kwargs: Any) -> GraphState:
        """Run the graph; returns a `GraphState` mapping every node to its final state."""
        order = self._ordered()
        values = {**(parameters or {}), **kwargs}
        known = {n.name for n in self.nodes if n.kind == "parameter"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"Flow {self.name!r} has no parameter(s) {', '.join(map(repr, unknown))}; it has {sorted(known) or 'none'}.")
        runner = task_runner or executor or self.task_runner
        options = {"task_runner": runner} if runner is not None else {}
        graph_flow = FlowFunction(lambda: _GraphRun(self, order, values).execute(), name=self.name, **options)
        flow_state = graph_flow(return_state=True)
        if not flow_state.is_completed():
            return GraphState(flow_state, {}, self)
        return GraphState(flow_state, flow_state.result().state.data, self)


class _Done:
    """A node settled in the flow body without a task run (parameter, setup, skipped)."""

    def __init__(self, state: State) -> None:
        self.state = state


class _GraphRun:
    def __init__(self, graph: Flow, order: list[Node], parameters: dict[str, Any]) -> None:
        self.graph = graph
        self.order = order
        self.parameters = parameters
        self.results: dict[Node, Any] = {}
        self.scopes: dict[Node, ResourceScope] = {}

    def execute(self) -> _Done:
        flow_run = current_run.get().flow_run  # type: ignore[union-attr]
        for node in self.order:
            self.results[node] = self._start(node, flow_run)
        states: dict[Node, State] = {}
        for node, outcome in self.results.items():
            states[node] = self._final(node, outcome)
        return _Done(Completed(states))  # wrapped: the flow must not resolve the states inside

    def _failed_upstream(self, node: Node) -> Node | None:
        for upstream in node.upstream + node.data_upstream():
            outcome = self.results[upstream]
            if upstream.kind == "cleanup":
                continue
            state = self._final(upstream, outcome) if isinstance(outcome, _Done) else None
            if state is not None and not state.is_completed():
                return upstream
        return None

    def _value(self, leaf: Any) -> Any:
        if not isinstance(leaf, Node):
            return leaf
        outcome = self.results[leaf]
        return outcome.state.data if isinstance(outcome, _Done) else outcome

    def _start(self, node: Node, flow_run: Any) -> Any:
        if node.kind == "parameter":
            if node.name in self.parameters:
                return _Done(Completed(self.parameters[node.name]))
            if node.kwargs["required"]:
                error = UsageError(f"Parameter {node.name!r} of Flow {self.graph.name!r} is required; pass it to flow.run().")
                return _Done(Failed(error, message=str(error)))
            return _Done(Completed(node.kwargs["default"]))
        failed = self._failed_upstream(node)
        if node.kind == "cleanup":
            setup = node.upstream[0]
            scope = self.scopes.get(setup)
            if scope is None:
                return _Done(State(StateType.COMPLETED, "Skipped", "setup did not succeed, so there is nothing to clean up"))
            scope.close_block(None)
            return scope
        if failed is not None:
            upstream_error = UpstreamFailedError(f"Node {node.name!r} did not run because its upstream {failed.name!r} did not succeed.")
            return _Done(Failed(upstream_error, message=str(upstream_error), name="TriggerFailed"))
        args = tuple(map_leaves(a, self._value) for a in node.args)
        kwargs = {k: map_leaves(v, self._value) for k, v in node.kwargs.items()}
        if node.kind == "setup":
            block = next(b for b in self.graph._blocks if b.setup is node)
            scope = ResourceScope(block.scope.resource, args, kwargs)
            scope.cleanup_fails_flow = False
            token = open_blocks.set(tuple(self.scopes[b.setup] for b in node.blocks if b.setup in self.scopes))
            try:
                value = scope.open_in(flow_run)
            except Exception as exc:  # the setup node fails; its block's nodes fail as upstream
                return _Done(Failed(exc, message=f"{type(exc).__name__}: {exc}"))
            finally:
                open_blocks.reset(token)
            self.scopes[node] = scope
            return _Done(Completed(value))
        wait_for = [self.results[u] for u in node.upstream if isinstance(self.results[u], (TaskFuture, TaskFutureList))]
        token = open_blocks.set(tuple(self.scopes[b.setup] for b in node.blocks if b.setup in self.scopes))
        try:
            if node.kind == "map":
                args = tuple(_resolved(a) for a in args)
                kwargs = {k: _resolved(v) for k, v in kwargs.items()}
                return node.task.map(*args, wait_for=wait_for, **kwargs)  # type: ignore[union-attr]
            return node.task.submit(*args, wait_for=wait_for, **kwargs)  # type: ignore[union-attr]
        finally:
            open_blocks.reset(token)

    def _final(self, node: Node, outcome: Any) -> State:
        if isinstance(outcome, _Done):
            return outcome.state
        if isinstance(outcome, ResourceScope):
            outcome.wait_for_cleanup()
            if outcome.cleanup_error is not None:
                error = outcome.cleanup_error
                return Failed(error, message=f"cleanup of {outcome.name!r} failed: {type(error).__name__}: {error}")
            return Completed(None)
        if isinstance(outcome, TaskFutureList):
            outcome.wait()
            states = [f._run.record.state for f in outcome]
            for future in outcome:
                future._run.observed = True
            bad = next((s for s in states if not s.is_completed()), None)
            if bad is not None:
                return bad
            return Completed([s.data for s in states])
        single: TaskFuture[Any] = outcome
        single.wait()
        single._run.observed = True
        return single.state


def _resolved(value: Any) -> Any:
    """For a mapped node: wait for upstream futures, so the mapped iterable is known."""
    if isinstance(value, unmapped):
        return value
    if isinstance(value, TaskFuture):
        return value.result()
    if isinstance(value, TaskFutureList):
        return value.result()
    return value


class NodeState:
    """The final state of one node, in Prefect 1's shape."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.message = state.message
        self.result = state.data

    def is_successful(self) -> bool:
        return self.state.is_completed() and self.state.name != "Skipped"

    def is_failed(self) -> bool:
        return self.state.type in (StateType.FAILED, StateType.CRASHED)

    def is_skipped(self) -> bool:
        return self.state.name == "Skipped"

    def __repr__(self) -> str:
        return f"<NodeState {self.state.name}: {self.message!r}>"


class GraphState:
    """What `Flow.run` returns: ``is_successful()``, ``is_failed()``, and ``result[node]``."""

    def __init__(self, flow_state: State, states: dict[Node, State], graph: Flow) -> None:
        self.flow_state = flow_state
        self.result = _NodeResults({node: NodeState(s) for node, s in states.items()}, graph)
        self._failed = not flow_state.is_completed() or self._terminal_failed(graph)
        self.message = flow_state.message if not flow_state.is_completed() else (
            "Some reference tasks failed." if self._failed else "All reference tasks succeeded."
        )

    def _terminal_failed(self, graph: Flow) -> bool:
        has_downstream: set[Node] = set()
        for node in graph.nodes:
            if node.kind == "cleanup":
                continue
            for upstream in node.upstream + node.data_upstream():
                has_downstream.add(upstream)
        terminal = [n for n in graph.nodes if n.kind != "cleanup" and n not in has_downstream]
        return any(self.result[n].is_failed() for n in terminal)

    def is_successful(self) -> bool:
        return not self._failed

    def is_failed(self) -> bool:
        return self._failed

    def __repr__(self) -> str:
        return f"<{'Success' if not self._failed else 'Failed'}: {self.message!r}>"


class _NodeResults(dict[Any, "NodeState"]):
    """Node -> NodeState, also indexable by a task used once in the graph."""

    def __init__(self, states: dict[Node, NodeState], graph: Flow) -> None:
        super().__init__(states)
        self._graph = graph

    def __getitem__(self, key: Any) -> NodeState:
        if isinstance(key, Task):
            key = self._graph._node_of(key)
        return super().__getitem__(key)


__all__ = ["Flow", "GraphState", "Node", "NodeState", "Parameter"]
