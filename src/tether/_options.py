"""Checking decorator options, shared by `@flow` and `@task`.

Bad options fail when the function is decorated, not when it first runs.
"""

from __future__ import annotations

import datetime
import inspect
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


def check_retries(owner: str, retries: Any, delay: Any) -> tuple[int, tuple[float, ...]]:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise UsageError(f"{owner}: retries={retries!r} must be a whole number >= 0.")
    delays: tuple[float, ...]
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        delays = (float(delay),)
    elif isinstance(delay, (list, tuple)) and delay and all(
        isinstance(d, (int, float)) and not isinstance(d, bool) for d in delay
    ):
        delays = tuple(float(d) for d in delay)
    else:
        raise UsageError(
            f"{owner}: retry_delay_seconds={delay!r} must be a number of seconds or a "
            "non-empty list of them (one per retry, the last one repeating)."
        )
    if any(d < 0 for d in delays):
        raise UsageError(f"{owner}: retry_delay_seconds={delay!r} cannot be negative.")
    return retries, delays


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


def check_hooks(owner: str, name: str, hooks: Any) -> tuple[Callable[..., Any], ...]:
    if hooks is None:
        return ()
    if callable(hooks):
        hooks = [hooks]
    hooks = tuple(hooks)
    for hook in hooks:
        if not callable(hook):
            raise UsageError(f"{owner}: {name} must be a list of callables; {hook!r} is not callable.")
    return hooks


def bind_parameters(owner: str, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name, or a `ParameterError` naming the problem."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ParameterError(
            f"{owner} was called with arguments that do not match its parameters "
            f"{signature}: {exc}."
        ) from None
    return bound.arguments
