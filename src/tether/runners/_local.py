"""Runners in the flow's own process: a thread pool (the default) and inline."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tether.runners._base import TaskRunner


class ThreadPoolRunner(TaskRunner):
    """Runs task bodies on a pool of threads in the flow's process (the default).

    ``max_workers`` defaults to ``min(32, cpu_count + 4)``, as in `ThreadPoolExecutor`.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise ValueError(
                f"ThreadPoolRunner(max_workers={max_workers!r}) needs a positive integer "
                "or None for the default."
            )
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="tether-worker")

    def stop(self) -> None:
        if self._pool is not None:
            # Runs abandoned after a timeout may still hold a thread: do not wait for them.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        if self._pool is None:
            raise RuntimeError(
                "ThreadPoolRunner.submit() was called before the runner was started; "
                "use it as a context manager or let a flow start it."
            )
        return self._pool.submit(fn, *args, **kwargs)

    def duplicate(self) -> ThreadPoolRunner:
        return ThreadPoolRunner(self.max_workers)

    def __repr__(self) -> str:
        return f"ThreadPoolRunner(max_workers={self.max_workers})"


class InlineRunner(TaskRunner):
    """Runs each task body at once in the thread that submits it. For tests and debugging."""

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future

    def duplicate(self) -> InlineRunner:
        return InlineRunner()

    def __repr__(self) -> str:
        return "InlineRunner()"
