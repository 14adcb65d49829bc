"""`@task`: the decorator, and the `Task` object it makes.

A `Task` knows its options and how to be called, submitted or mapped; running
a task run is `_task_run`'s job. Outside a flow, calling a task runs the plain
function, like Prefect's ``.fn``.
"""

from __future__ import annotations

import datetime
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, overload

from tether._context import building_graph, current_run, current_tags
from tether._errors import UsageError
from tether._futures import TaskFuture, TaskFutureList
from tether._options import (
    ParameterBinder,
    check_callable,
    check_expiration,
    check_hooks,
    check_retries,
    check_timeout,
    check_unknown,
)

R = TypeVar("R")

TASK_OPTIONS = (
    "name",
    "tags",
    "retries",
    "retry_delay_seconds",
    "timeout_seconds",
    "cache_key_fn",
    "cache_expiration",
    "on_completion",
    "on_failure",
    "log_prints",
    "description",
)


class unmapped:
    """Wrap an argument of ``task.map`` that is passed whole to every run, not iterated."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Task(Generic[R]):
    """A function decorated with `@task`."""

    def __init__(
        self,
        fn: Callable[..., R],
        name: str | None = None,
        tags: Iterable[str] | None = None,
        retries: int = 0,
        retry_delay_seconds: float | list[float] = 0,
        timeout_seconds: float | None = None,
        cache_key_fn: Callable[[Any, dict[str, Any]], str | None] | None = None,
        cache_expiration: datetime.timedelta | None = None,
        on_completion: list[Callable[..., Any]] | None = None,
        on_failure: list[Callable[..., Any]] | None = None,
        log_prints: bool | None = None,
        description: str | None = None,
    ) -> None:
        check_callable("task", fn)
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", type(fn).__name__))
        owner = f"Task {self.name!r}"
        if isinstance(tags, str):
            tags = [tags]
        self.tags = frozenset(tags or ())
        self.retries, self.retry_delays = check_retries(owner, retries, retry_delay_seconds)
        self.retry_delay_seconds = retry_delay_seconds
        self.timeout_seconds = check_timeout(owner, timeout_seconds)
        if cache_key_fn is not None and not callable(cache_key_fn):
            raise UsageError(f"{owner}: cache_key_fn={cache_key_fn!r} must be a function (context, parameters) -> str.")
        self.cache_key_fn = cache_key_fn
        self.cache_expiration = check_expiration(owner, cache_expiration)
        self.on_completion = check_hooks(owner, "on_completion", on_completion)
        self.on_failure = check_hooks(owner, "on_failure", on_failure)
        self.log_prints = log_prints
        self.description = description or inspect.getdoc(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self._binder = ParameterBinder(owner, self.signature)
        self._owner = owner
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return self._binder.bind(args, kwargs)

    def __call__(self, *args: Any, return_state: bool = False, wait_for: Iterable[Any] | None = None, **kwargs: Any) -> Any:
        ctx = current_run.get()
        if ctx is None:
            graph = building_graph.get()
            if graph is not None:  # inside `with Flow(...)`: build a node, run nothing
                return graph.add_call(self, args, kwargs, kwargs.pop("upstream_tasks", None) or wait_for)
            return self.fn(*args, **kwargs)
        return ctx.flow_run.call_task(self, args, kwargs, wait_for, return_state)

    def submit(self, *args: Any, wait_for: Iterable[Any] | None = None, return_state: bool = False, **kwargs: Any) -> TaskFuture:
        ctx = current_run.get()
        if ctx is None:
            raise UsageError(
                f"{self._owner}.submit() was called outside a flow run, so there is no flow to "
                f"run it in. Call the task directly ({self.name}(...)) to run it as plain "
                "Python, or call .submit() inside a function decorated with @flow."
            )
        future = ctx.flow_run.submit_task(self, args, kwargs, wait_for)
        if return_state:
            future._run.observed = True  # the caller handles the state, failure included
            future.wait()
            return future.state  # type: ignore[return-value]
        return future

    def map(self, *args: Any, wait_for: Iterable[Any] | None = None, **kwargs: Any) -> TaskFutureList:
        ctx = current_run.get()
        if ctx is None and building_graph.get() is not None:
            return building_graph.get().add_map(self, args, kwargs, kwargs.pop("upstream_tasks", None) or wait_for)
        if ctx is None:
            raise UsageError(
                f"{self._owner}.map() was called outside a flow run. Call .map() inside a "
                "function decorated with @flow, or loop over the task yourself in plain Python."
            )
        calls = self._mapped_calls(args, kwargs)
        return TaskFutureList(ctx.flow_run.submit_task(self, a, k, wait_for) for a, k in calls)

    def _mapped_calls(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """One (args, kwargs) per mapped run. Each iterable is read once (a generator works)."""

        def materialise(value: Any) -> tuple[bool, Any]:  # (mapped over?, value or list of values)
            if isinstance(value, unmapped):
                return False, value.value
            if _is_iterable(value):
                return True, list(value)
            return False, value

        positional = [materialise(v) for v in args]
        named = {k: materialise(v) for k, v in kwargs.items()}
        names = list(self.signature.parameters)
        places = [(names[i] if i < len(names) else f"argument {i}", m) for i, m in enumerate(positional)]
        lengths = {place: len(values) for place, (mapped, values) in places + list(named.items()) if mapped}
        if not lengths:
            raise UsageError(
                f"{self._owner}.map() needs at least one iterable argument to map over; "
                "wrap arguments passed whole to every run in unmapped(...)."
            )
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{k}: {v}" for k, v in lengths.items())
            raise UsageError(
                f"{self._owner}.map() got iterables of different lengths ({described}). "
                "Give them the same length, or wrap the ones passed whole in unmapped(...)."
            )

        def pick(materialised: tuple[bool, Any], i: int) -> Any:
            mapped, value = materialised
            return value[i] if mapped else value

        return [
            (tuple(pick(m, i) for m in positional), {k: pick(m, i) for k, m in named.items()})
            for i in range(next(iter(lengths.values())))
        ]

    def __repr__(self) -> str:
        return f"Task(name={self.name!r})"


def _is_iterable(value: Any) -> bool:
    if isinstance(value, (str, bytes, dict)) or isinstance(value, TaskFuture):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


@overload
def task(__fn: Callable[..., R]) -> Task[R]: ...


@overload
def task(**options: Any) -> Callable[[Callable[..., R]], Task[R]]: ...


def task(__fn: Callable[..., R] | None = None, **options: Any) -> Any:
    """Decorate a function as a task; works bare (``@task``) or with options (``@task(retries=2)``)."""
    check_unknown("task", options, TASK_OPTIONS)
    if __fn is not None:
        return Task(__fn, **options)

    def decorate(fn: Callable[..., R]) -> Task[R]:
        return Task(fn, **options)

    return decorate


class tags:
    """``with tags("mysql", "etl"):`` adds tags to every task run created inside the block."""

    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)
        self._token: Any = None

    def __enter__(self) -> frozenset[str]:
        merged = current_tags.get() | self.names
        self._token = current_tags.set(merged)
        return merged

    def __exit__(self, *exc_info: object) -> None:
        current_tags.reset(self._token)
