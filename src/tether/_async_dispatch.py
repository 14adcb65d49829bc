"""Prefect's sync-or-async calls: ``Variable.get(...)`` returns a value in sync code and an awaitable in async code.

Prefect 3 decorates ``Variable.get``, ``Secret.load``, ``create_markdown_artifact`` and
the like so that one name serves both worlds: in an async flow or task (or, outside
any run, under a running event loop) the call returns the coroutine of its async twin
(``Variable.aget``), to be awaited, as ``await Variable.get("x")`` in Prefect's docs;
anywhere else it runs at once. `dispatch` does the same, with Prefect's escape hatch
``_sync=True`` / ``_sync=False`` and the twin as ``.aio``; methods ask `wants_sync`.

The async twins here run the synchronous call in a worker thread (the store's calls are
short, but SQLite may wait for a lock): this module decides where a call runs, nothing else.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tether._context import current_run

R = TypeVar("R")


def in_async_context() -> bool:
    """Whether the caller is async code, as Prefect decides it: the current task run's (else
    flow run's) function is ``async def``; outside a run (or where the run does not say, as on
    a remote worker), whether an event loop runs in this thread."""
    ctx = current_run.get()
    if ctx is not None:
        owner = ctx.task_run.task if ctx.task_run is not None else getattr(ctx.flow_run, "flow", None)
        is_async = getattr(owner, "is_async", None)
        if is_async is not None:
            return bool(is_async)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def wants_sync(flag: bool | None) -> bool:
    """Whether a dual call runs now: ``_sync=`` when given, else not from async code."""
    return bool(flag) if flag is not None else not in_async_context()


def dispatch(async_impl: Callable[..., Coroutine[Any, Any, R]]) -> Callable[[Callable[..., R]], Callable[..., Any]]:
    """Make ``sync_fn`` return ``async_impl``'s coroutine when called from async code."""

    def decorator(sync_fn: Callable[..., R]) -> Callable[..., Any]:
        @functools.wraps(sync_fn)
        def either(*args: Any, **kwargs: Any) -> Any:
            if wants_sync(kwargs.pop("_sync", None)):
                return sync_fn(*args, **kwargs)
            return async_impl(*args, **kwargs)

        either.aio = async_impl  # type: ignore[attr-defined]
        return either

    return decorator


async def in_thread(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """``fn(*args, **kwargs)`` in a worker thread, with the caller's context (the current run)."""
    return await asyncio.to_thread(fn, *args, **kwargs)
