"""The runner contract: how a task body gets a thread, a process or a worker.

A runner is a context manager (start on enter, stop on exit) with one method,
``submit(fn, *args, **kwargs) -> concurrent.futures.Future``. The engine decides
everything else (states, retries, slots, resources) before and after.

``shares_memory`` tells the engine whether ``fn`` runs in this process: if not,
arguments must be picklable and resource values travel as per-worker copies.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class TaskRunner:
    """Base class of runners. Subclasses implement `submit`, and `start`/`stop` if needed."""

    shares_memory: bool = True

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        raise NotImplementedError

    def run_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` without a future, for callers that report its outcome
        themselves; ``fn`` must not raise. Runners may make this cheaper than `submit`."""
        self.submit(fn, *args)

    def start(self) -> None:
        """Acquire what the runner needs (threads, a cluster); called once per flow run."""

    def stop(self) -> None:
        """Release it; called once, after the last task of the flow run ended."""

    def duplicate(self) -> TaskRunner:
        """A fresh, unstarted runner with the same settings, for one flow run."""
        raise NotImplementedError

    def __enter__(self) -> TaskRunner:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
