"""Runners in the flow's own process: a thread pool (the default) and inline."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from tether.runners._checks import check_count
from tether.runners._base import TaskRunner


class _DaemonThreadPool:
    """A fixed pool of daemon threads fed by one queue.

    Daemon threads, because a task body blocked in C that the engine abandoned
    after a timeout or a cancellation must not keep the process alive at exit
    (`ThreadPoolExecutor` joins its threads at exit). All threads start at once:
    no idle bookkeeping on the hot path.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work_loop, name=f"{name}-{i}", daemon=True) for i in range(max_workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._work.put((_run_into_future, (future, fn, args, kwargs)))
        return future

    def run_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self._work.put((fn, args))

    def _work_loop(self) -> None:
        get = self._work.get
        while True:
            item = get()
            if item is None:
                return
            fn, args = item
            fn(*args)
            del item, fn, args

    def shutdown(self) -> None:
        """Stop the threads once the queued work is done; a thread still busy (abandoned)
        finishes on its own."""
        for _ in self._threads:
            self._work.put(None)


def _run_into_future(future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if future.set_running_or_notify_cancel():
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to whoever holds the future
            future.set_exception(exc)


class ThreadPoolRunner(TaskRunner):
    """Runs task bodies on a pool of threads in the flow's process (the default).

    ``max_workers`` defaults to ``min(32, cpu_count + 4)``, as in `ThreadPoolExecutor`.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        check_count("ThreadPoolRunner", "max_workers", max_workers, "threads that run task bodies at once", "min(32, CPUs + 4)")
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._pool: _DaemonThreadPool | None = None

    def start(self) -> None:
        self._pool = _DaemonThreadPool(self.max_workers, "tether-worker")

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        if self._pool is None:
            raise RuntimeError(
                "ThreadPoolRunner.submit() was called before the runner was started; "
                "use it as a context manager or let a flow start it."
            )
        return self._pool.submit(fn, *args, **kwargs)

    def run_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._pool is None:
            raise RuntimeError("ThreadPoolRunner.run_soon() was called before the runner was started.")
        self._pool.run_soon(fn, *args)

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
