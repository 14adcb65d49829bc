"""Checking decorator options, shared by `@flow` and `@task`, and the records of them.

Bad options fail when the function is decorated, not when it first runs. What passed the
checks is kept in a frozen `FlowOptions` / `TaskOptions`, made once at decoration: the
engine reads a run's options from there and never names `FlowFunction` or `Task`. This
module runs nothing and knows no run.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from tether._errors import ParameterError, UsageError


def check_unknown(kind: str, given: dict[str, Any], valid: Sequence[str]) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise UsageError(
            f"@{kind} got unknown option(s) {', '.join(map(repr, unknown))}. "
            f"Valid options are: {', '.join(sorted(valid))}."
        )


def check_callable(kind: str, fn: Any) -> None:
    if not callable(fn):
        raise UsageError(
            f"@{kind} decorates a function, but got {fn!r} of type {type(fn).__name__}. "
            f"Write @{kind} (or @{kind}(...)) directly above a 'def' or 'async def'."
        )


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """Retry delays that double: ``backoff_factor``, then twice it, four times... (Prefect's).

    ``@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10))``
    waits 10, 20 and 40 seconds."""

    def retry_backoff(retries: int) -> list[float]:
        return [backoff_factor * 2**r for r in range(min(retries, 50))]

    return retry_backoff


def check_retries(owner: str, retries: Any, delay: Any) -> tuple[int, tuple[float, ...]]:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise UsageError(f"{owner}: retries={retries!r} must be a whole number >= 0.")
    delays: tuple[float, ...]
    if callable(delay):  # exponential_backoff(...): a function of the number of retries
        delay = list(delay(retries)) or [0]
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        delays = (float(delay),)
    elif isinstance(delay, (list, tuple)) and delay and all(
        isinstance(d, (int, float)) and not isinstance(d, bool) for d in delay
    ):
        delays = tuple(float(d) for d in delay)
    else:
        raise UsageError(
            f"{owner}: retry_delay_seconds={delay!r} must be a number of seconds, a "
            "non-empty list of them (one per retry, the last one repeating), or a function "
            "of the number of retries returning that list (exponential_backoff(...))."
        )
    if any(d < 0 for d in delays):
        raise UsageError(f"{owner}: retry_delay_seconds={delay!r} cannot be negative.")
    return retries, delays


def clamped_poisson_interval(average: float, clamping_factor: float) -> float:
    """A random delay averaging ``average`` and at most ``average * (1 + clamping_factor)``.

    Drawn from an exponential distribution cut at that upper bound and at a lower bound
    chosen so the median stays ``average``; retries of many runs then spread out instead
    of hitting a recovering service together."""
    upper_multiple = 1 + clamping_factor
    lower_multiple = 0.0 if upper_multiple >= 50 else math.log2(2**upper_multiple / (2**upper_multiple - 1))
    lower_rv = 1 - math.exp(-lower_multiple)
    upper_rv = 1 - math.exp(-upper_multiple)
    return -math.log(max(1 - random.uniform(lower_rv, upper_rv), 1e-10)) * average


def check_jitter(owner: str, factor: Any) -> float | None:
    if factor is None:
        return None
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 0:
        raise UsageError(
            f"{owner}: retry_jitter_factor={factor!r} must be a number >= 0 (0.5 lets each retry "
            "delay vary up to 50% above its value) or None."
        )
    return float(factor)


def check_function(owner: str, name: str, fn: Any, shape: str) -> Any:
    if fn is not None and not callable(fn):
        raise UsageError(f"{owner}: {name}={fn!r} must be a function {shape}, or None.")
    return fn


def check_flag(owner: str, name: str, value: Any, optional: bool = True) -> bool | None:
    if (value is None and optional) or isinstance(value, bool):
        return value
    raise UsageError(f"{owner}: {name}={value!r} must be True or False{' (or None)' if optional else ''}.")


def check_text(owner: str, name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise UsageError(f"{owner}: {name}={value!r} must be a str or None.")


def check_timeout(owner: str, timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise UsageError(f"{owner}: timeout_seconds={timeout!r} must be a positive number of seconds or None.")
    return float(timeout)


def check_expiration(owner: str, expiration: Any) -> datetime.timedelta | None:
    if expiration is None or isinstance(expiration, datetime.timedelta):
        return expiration
    if isinstance(expiration, (int, float)) and not isinstance(expiration, bool):
        return datetime.timedelta(seconds=expiration)
    raise UsageError(f"{owner}: cache_expiration={expiration!r} must be a datetime.timedelta or seconds.")


class Hooks(tuple):  # type: ignore[type-arg]
    """A task's or flow's hooks for one state (``on_failure``...): a tuple the engine reads,
    that also registers a hook when called, as Prefect's decorator does::

        @my_flow.on_failure
        def notify(flow, flow_run, state): ...
    """

    _owner: Any
    _name: str

    def __new__(cls, hooks: tuple[Callable[..., Any], ...], owner: Any, name: str) -> Hooks:
        made = super().__new__(cls, hooks)
        made._owner, made._name = owner, name
        return made

    def __reduce__(self) -> tuple[Any, ...]:  # a task travels to remote workers pickled
        return (Hooks, (tuple(self), self._owner, self._name))

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        check_hooks(repr(self._owner), self._name, [fn])
        hooks = Hooks((*self, fn), self._owner, self._name)
        setattr(self._owner, self._name, hooks)
        options = getattr(self._owner, "options", None)
        # The record the engine reads follows, when it carries hooks of this name.
        if isinstance(options, (FlowOptions, TaskOptions)) and hasattr(options, self._name):
            self._owner.options = dataclasses.replace(options, **{self._name: hooks})  # type: ignore[arg-type]
        return fn


def check_hooks(owner: str, name: str, hooks: Any) -> tuple[Callable[..., Any], ...]:
    if hooks is None:
        return ()
    if callable(hooks):
        hooks = [hooks]
    checked: tuple[Callable[..., Any], ...] = tuple(hooks)
    for hook in checked:
        if not callable(hook):
            raise UsageError(f"{owner}: {name} must be a list of callables; {hook!r} is not callable.")
    return checked


class ParameterBinder:
    """Maps a call's arguments to parameter names, checking them against the signature.

    Plain signatures (named parameters, no ``*args``, ``**kwargs``, positional-only or
    keyword-only ones) take a fast path; the hot path of every task call goes through here.
    """

    def __init__(self, owner: str, signature: inspect.Signature) -> None:
        self.owner = owner
        self.signature = signature
        params = list(signature.parameters.values())
        self.names = [p.name for p in params]
        self.name_set = frozenset(self.names)
        self.required = frozenset(p.name for p in params if p.default is p.empty)
        self.simple = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.simple and len(args) <= len(self.names):
            bound = dict(zip(self.names, args))
            for key, value in kwargs.items():
                if key not in self.name_set or key in bound:
                    return self._slow(args, kwargs)
                bound[key] = value
            if self.required and not bound.keys() >= self.required:  # one missing: `_slow` says which
                return self._slow(args, kwargs)
            return bound
        return self._slow(args, kwargs)

    def _slow(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """`Signature.bind`, turning its TypeError into a `ParameterError` naming the problem."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ParameterError(
                f"{self.owner} was called with arguments that do not match its parameters "
                f"{self.signature}: {exc}."
            ) from None
        return bound.arguments


# -- the records the engine reads ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class TaskOptions:
    """A task's checked options, as the engine reads them (``Task.options``).

    Registering a hook later (``@my_task.on_failure``) replaces the record with one that
    has it. ``cache_policy`` is the policy in force, already decided from ``cache_key_fn``,
    ``cache_policy``, ``result_storage_key`` and ``persist_result``."""

    name: str
    owner: str  # how messages name the task: "Task 'load'"
    fn: Callable[..., Any]
    is_async: bool
    signature: inspect.Signature
    binder: ParameterBinder
    tags: frozenset[str]
    retries: int
    retry_delays: tuple[float, ...]
    retry_jitter_factor: float | None
    retry_condition_fn: Callable[..., bool] | None
    timeout_seconds: float | None
    cache_policy: Any  # a tether.cache_policies policy, or None: no caching
    inherits_persistence: bool  # no caching option at all: the flow's persist_result decides
    refresh_cache: bool
    cache_expiration: datetime.timedelta | None
    log_prints: bool | None
    task_run_name: Any
    on_completion: tuple[Callable[..., Any], ...]
    on_failure: tuple[Callable[..., Any], ...]
    on_running: tuple[Callable[..., Any], ...]

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return self.binder.bind(args, kwargs)

    def retry_delay(self, retries_done: int) -> float:
        """The delay before retry number ``retries_done + 1``, with ``retry_jitter_factor``'s
        randomness: up to that fraction more, averaging the delay itself (Prefect's clamped
        Poisson interval)."""
        delays = self.retry_delays
        delay = delays[min(retries_done, len(delays) - 1)]
        if self.retry_jitter_factor and delay > 0:
            delay = clamped_poisson_interval(delay, self.retry_jitter_factor)
        return delay


@dataclasses.dataclass(frozen=True, eq=False)
class FlowOptions:
    """A flow's checked options, as the engine reads them (``FlowFunction.options``)."""

    name: str
    owner: str  # how messages name the flow: "Flow 'etl'"
    fn: Callable[..., Any]
    is_async: bool
    signature: inspect.Signature
    binder: ParameterBinder
    validator: Any  # a ParameterValidator, or None when the flow does not validate
    retries: int
    retry_delays: tuple[float, ...]
    timeout_seconds: float | None
    task_runner: Any  # the runner given; each flow run runs on a duplicate of it
    log_prints: bool
    persist_result: bool | None
    flow_run_name: Any
    on_completion: tuple[Callable[..., Any], ...]
    on_failure: tuple[Callable[..., Any], ...]
    on_cancellation: tuple[Callable[..., Any], ...]
    on_crashed: tuple[Callable[..., Any], ...]
    on_running: tuple[Callable[..., Any], ...]

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return self.binder.bind(args, kwargs)
