"""`@task`: the decorator, and the `Task` object it makes.

A `Task` knows its options and how to be called, submitted or mapped; running
a task run is `_task_run`'s job. Outside a flow, calling a task runs it as a task run
of its own (`_engine._standalone`), as Prefect 3 does; ``.fn`` is the plain function. Options are checked and turned into what the
engine reads (retry delays, the cache policy in force) once, here, not per run.
"""

from __future__ import annotations

import datetime
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, overload

from tether._cache_policies import DEFAULT, NONE, CacheKeyFnPolicy, CachePolicy, StorageKeyPolicy
from tether._context import building_graph, current_run, current_tags
from tether._engine._standalone import run_standalone
from tether._errors import UsageError
from tether._futures import TaskFuture, TaskFutureList
from tether._options import (
    Hooks,
    ParameterBinder,
    TaskOptions,
    check_callable,
    check_expiration,
    check_flag,
    check_function,
    check_hooks,
    check_jitter,
    check_retries,
    check_text,
    check_timeout,
    check_unknown,
)
from tether._run_names import RunName, check_run_name
from tether.transactions import plain_scopes

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
    "version",
    "task_run_name",
    "retry_jitter_factor",
    "retry_condition_fn",
    "cache_policy",
    "persist_result",
    "refresh_cache",
    "result_storage_key",
    "on_running",
    "on_commit",
    "on_rollback",
    # Prefect 1's names for the same things:
    "log_stdout",
    "max_retries",
    "retry_delay",
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
        retry_delay_seconds: float | list[float] | Callable[[int], list[float]] = 0,
        timeout_seconds: float | None = None,
        cache_key_fn: Callable[[Any, dict[str, Any]], str | None] | None = None,
        cache_expiration: datetime.timedelta | None = None,
        on_completion: list[Callable[..., Any]] | None = None,
        on_failure: list[Callable[..., Any]] | None = None,
        log_prints: bool | None = None,
        description: str | None = None,
        version: str | None = None,
        task_run_name: RunName | None = None,
        retry_jitter_factor: float | None = None,
        retry_condition_fn: Callable[..., bool] | None = None,
        cache_policy: CachePolicy | None = None,
        persist_result: bool | None = None,
        refresh_cache: bool | None = None,
        result_storage_key: str | None = None,
        on_running: list[Callable[..., Any]] | None = None,
        on_commit: list[Callable[..., Any]] | None = None,
        on_rollback: list[Callable[..., Any]] | None = None,
        log_stdout: bool | None = None,
        max_retries: int | None = None,
        retry_delay: datetime.timedelta | float | None = None,
    ) -> None:
        check_callable("task", fn)
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", type(fn).__name__))
        owner = f"Task {self.name!r}"
        self._options = {k: v for k, v in locals().items() if k in TASK_OPTIONS and v is not None}
        if isinstance(tags, str):
            tags = [tags]
        self.tags = frozenset(tags or ())
        retries = _one_of(owner, "retries", retries, 0, "max_retries", max_retries)
        if isinstance(retry_delay, datetime.timedelta):
            retry_delay = retry_delay.total_seconds()
        retry_delay_seconds = _one_of(owner, "retry_delay_seconds", retry_delay_seconds, 0, "retry_delay", retry_delay)
        self.retries, self.retry_delays = check_retries(owner, retries, retry_delay_seconds)
        self.retry_delay_seconds = retry_delay_seconds
        self.retry_jitter_factor = check_jitter(owner, retry_jitter_factor)
        self.retry_condition_fn = check_function(owner, "retry_condition_fn", retry_condition_fn, "(task, task_run, state) -> bool")
        self.timeout_seconds = check_timeout(owner, timeout_seconds)
        if cache_key_fn is not None and not callable(cache_key_fn):
            raise UsageError(f"{owner}: cache_key_fn={cache_key_fn!r} must be a function (context, parameters) -> str.")
        self.cache_key_fn = cache_key_fn
        if cache_policy is not None and not isinstance(cache_policy, CachePolicy):
            raise UsageError(
                f"{owner}: cache_policy={cache_policy!r} is not a cache policy. Use one of "
                "tether.cache_policies (INPUTS, TASK_SOURCE, RUN_ID, NONE, DEFAULT, combined with +)."
            )
        self.persist_result = check_flag(owner, "persist_result", persist_result)
        self.refresh_cache = bool(check_flag(owner, "refresh_cache", refresh_cache))
        self.cache_expiration = check_expiration(owner, cache_expiration)
        self.result_storage_key = check_text(owner, "result_storage_key", result_storage_key)
        self.cache_policy: CachePolicy | None = _policy_in_force(cache_policy, cache_key_fn, self.result_storage_key, self.persist_result)
        # No caching option at all: the flow's persist_result decides, as in Prefect.
        self.inherits_persistence = cache_policy is None and cache_key_fn is None and result_storage_key is None and persist_result is None
        self.task_run_name = check_run_name(owner, "task_run_name", task_run_name)
        self.on_completion = Hooks(check_hooks(owner, "on_completion", on_completion), self, "on_completion")
        self.on_failure = Hooks(check_hooks(owner, "on_failure", on_failure), self, "on_failure")
        self.on_running = Hooks(check_hooks(owner, "on_running", on_running), self, "on_running")
        # Read by the task run's transaction, not by the engine: no cost outside transactions.
        self.on_commit = TransactionHooks(check_hooks(owner, "on_commit", on_commit), self, "on_commit")
        self.on_rollback = TransactionHooks(check_hooks(owner, "on_rollback", on_rollback), self, "on_rollback")
        self.log_prints = _one_of(owner, "log_prints", log_prints, None, "log_stdout", log_stdout)
        self.description = check_text(owner, "description", description) or inspect.getdoc(fn)
        self.version = check_text(owner, "version", version)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self._binder = ParameterBinder(owner, self.signature)
        self._owner = owner
        functools.update_wrapper(self, fn)
        #: What the engine reads (it never names `Task`): set last, so nothing of ``fn`` covers it.
        self.options = TaskOptions(
            self.name, owner, fn, self.is_async, self.signature, self._binder, self.tags, self.retries,
            self.retry_delays, self.retry_jitter_factor, self.retry_condition_fn, self.timeout_seconds,
            self.cache_policy, self.inherits_persistence, self.refresh_cache, self.cache_expiration,
            self.log_prints, self.task_run_name, self.on_completion, self.on_failure, self.on_running,
        )

    @property
    def on_commit_hooks(self) -> list[Callable[..., Any]]:
        """Prefect's name for the hooks run when this task's transaction commits."""
        return list(self.on_commit)

    @property
    def on_rollback_hooks(self) -> list[Callable[..., Any]]:
        """Prefect's name for the hooks run when this task's transaction rolls back."""
        return list(self.on_rollback)

    def with_options(self, **options: Any) -> Task[R]:
        """A copy of this task with some options changed (the others as they were)."""
        check_unknown("task", options, TASK_OPTIONS)
        current = dict(self._options)
        for new, old in (("retries", "max_retries"), ("retry_delay_seconds", "retry_delay"), ("log_prints", "log_stdout")):
            if new in options or old in options:
                current.pop(new, None)
                current.pop(old, None)
        return Task(self.fn, **{**current, **options})

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return self._binder.bind(args, kwargs)

    def __call__(self, *args: Any, return_state: bool = False, wait_for: Iterable[Any] | None = None, **kwargs: Any) -> Any:
        ctx = current_run.get()
        if ctx is None:
            graph = building_graph.get()
            if graph is not None:  # inside `with Flow(...)`: build a node, run nothing
                return graph.add_call(self, args, kwargs, kwargs.pop("upstream_tasks", None) or wait_for)
            # A task run of its own, as in Prefect 3 (a member of the transaction around it, if any).
            return run_standalone(self, args, kwargs, wait_for, return_state, plain_scopes())
        return ctx.flow_run.call_task(self, args, kwargs, wait_for, return_state)

    def submit(self, *args: Any, wait_for: Iterable[Any] | None = None, return_state: bool = False, **kwargs: Any) -> TaskFuture[R]:
        ctx = current_run.get()
        if ctx is None:
            raise UsageError(
                f"{self._owner}.submit() was called outside a flow run, so there is no flow to "
                f"run it in. Call the task directly ({self.name}(...)) to run it as a task "
                "run of its own, or call .submit() inside a function decorated with @flow."
            )
        future = ctx.flow_run.submit_task(self, args, kwargs, wait_for)
        if return_state:
            future._run.observed = True  # the caller handles the state, failure included
            future.wait()
            return future.state  # type: ignore[return-value]
        return future

    def map(self, *args: Any, return_state: bool = False, wait_for: Iterable[Any] | None = None, **kwargs: Any) -> Any:
        """One run per item of the iterable arguments: a `TaskFutureList`, or with
        ``return_state=True`` (as in Prefect) the list of their final states, once all ended."""
        ctx = current_run.get()
        graph = building_graph.get()
        if ctx is None and graph is not None:  # inside `with Flow(...)`: a node of the graph, not futures
            return graph.add_map(self, args, kwargs, kwargs.pop("upstream_tasks", None) or wait_for)
        if ctx is None:
            raise UsageError(
                f"{self._owner}.map() was called outside a flow run. Call .map() inside a "
                "function decorated with @flow, or loop over the task yourself in plain Python."
            )
        calls = self._mapped_calls(args, kwargs)
        futures: TaskFutureList[R] = TaskFutureList(ctx.flow_run.submit_task(self, a, k, wait_for) for a, k in calls)
        if return_state:
            futures.wait()
            return [future.state for future in futures]  # each failure counts as looked at, as `.state` does
        return futures

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


class TransactionHooks(Hooks):
    """A task's ``on_commit`` / ``on_rollback`` hooks: a tuple its transaction reads, that
    registers a hook when called (``@my_task.on_rollback``), as Prefect's decorator does.
    The engine's options record does not carry them: only a transaction reads them."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (TransactionHooks, (tuple(self), self._owner, self._name))

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        check_hooks(repr(self._owner), self._name, [fn])
        setattr(self._owner, self._name, TransactionHooks((*self, fn), self._owner, self._name))
        return fn


def _one_of(owner: str, name: str, value: Any, default: Any, old_name: str, old_value: Any) -> Any:
    """An option that Prefect 1 named differently (``old_name``): either name, not both."""
    if old_value is None:
        return value
    if value is not default:
        raise UsageError(f"{owner}: {name}= and {old_name}= are the same option (Prefect 3's and Prefect 1's names); give one.")
    return old_value


def _policy_in_force(policy: CachePolicy | None, key_fn: Any, storage_key: str | None, persist_result: bool | None) -> CachePolicy | None:
    """The policy that makes this task's cache keys, or None for no caching (as Prefect 3 decides)."""
    if persist_result is False or policy == NONE:  # results are not kept, so there is nothing to reuse
        return None
    if storage_key is not None:  # the key the result is stored under is the one it is found by
        return StorageKeyPolicy(storage_key)
    if key_fn is not None:
        return CacheKeyFnPolicy(key_fn)
    if policy is not None:
        return None if policy == NONE else policy
    return DEFAULT if persist_result else None


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
