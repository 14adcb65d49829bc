"""The runner contract: how a task body gets a thread, a process or a worker.

A runner is a context manager (start on enter, stop on exit) with one method,
``submit(fn, *args, **kwargs) -> concurrent.futures.Future``. The engine decides
everything else (states, retries, slots, resources) before and after.

``shares_memory`` tells the engine whether ``fn`` runs in this process: if not,
arguments must be picklable and resource values travel as per-worker copies.

Runners whose workers are other processes, maybe on other machines, are
`RemoteRunner`s. On top of `submit`, they can:

- ``submit_to(worker, fn, *args)``: run ``fn`` on one named worker (the one that holds
  a copy of a resource, to close it there); fails with `WorkerLost` if it is gone;
- ``interrupt(future, call_id, exc_type)``: cancel a call that has not started, and
  raise ``exc_type`` in the one that runs (timeouts, cancellation);
- ``abandon(future)``: give up on a call that did not stop within the grace period
  (a process runner terminates its process);
- ``worker_names()``: the names of its live workers (to close the copies that abandoned
  calls may have opened, wherever they ran).

A worker's name is the one its `WorkerRuntime` (`runners/_worker.py`) was given by its runner.
The engine closes the copies a runner's workers hold before it stops the runner; this
module does no engine work.
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


class RemoteRunner(TaskRunner):
    """Base class of runners that run task bodies in other processes."""

    shares_memory = False

    def submit_to(self, worker: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` on ``worker`` (not on another one); `WorkerLost` if it is gone."""
        raise NotImplementedError

    def interrupt(self, future: Future[Any], call_id: str, exc_type: type[BaseException]) -> None:
        """Cancel ``future``'s call if it has not started; raise ``exc_type`` in it if it runs."""
        raise NotImplementedError

    def abandon(self, future: Future[Any]) -> None:
        """The call did not stop when interrupted. By default its worker thread runs on."""

    def worker_names(self) -> list[str]:
        """The names of the live workers: the names their `WorkerRuntime`s were given."""
        raise NotImplementedError
