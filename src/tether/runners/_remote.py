"""The contract of runners whose workers are other processes, maybe on other machines.

On top of `TaskRunner.submit`, a `RemoteRunner` can:

- ``submit_to(worker, fn, *args)``: run ``fn`` on one named worker (the one that holds
  a copy of a resource, to close it there); fails with `WorkerLost` if it is gone;
- ``interrupt(future, call_id, exc_type)``: cancel a call that has not started, and
  raise ``exc_type`` in the one that runs (timeouts, cancellation);
- ``abandon(future)``: give up on a call that did not stop within the grace period
  (a process runner terminates its process);
- ``worker_names()``: the names of its live workers (to close the copies that abandoned
  calls may have opened, wherever they ran).

A worker's name is whatever the runner's workers report through `_worker.identify`.
Stopping the runner first closes the copies its workers still hold.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from tether._copies import close_copies_held_by
from tether._wire import CleanupReport
from tether._worker import cleanup_copy
from tether.runners._base import TaskRunner


class RemoteRunner(TaskRunner):
    """Base class of runners that run task bodies in other processes."""

    shares_memory = False

    def submit_to(self, worker: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` on ``worker`` (not on another one); `WorkerLost` if it is gone."""
        raise NotImplementedError

    def close_copy(self, worker: str, scope_id: str, error: bytes | None, drain_seconds: float) -> Future[CleanupReport]:
        """Close ``worker``'s copy of a resource scope (see `_worker.cleanup_copy`)."""
        return self.submit_to(worker, cleanup_copy, scope_id, error, drain_seconds)

    def interrupt(self, future: Future[Any], call_id: str, exc_type: type[BaseException]) -> None:
        """Cancel ``future``'s call if it has not started; raise ``exc_type`` in it if it runs."""
        raise NotImplementedError

    def abandon(self, future: Future[Any]) -> None:
        """The call did not stop when interrupted. By default its worker thread runs on."""

    def worker_names(self) -> list[str]:
        """The names of the live workers, as they report them (see `_worker.identify`)."""
        raise NotImplementedError

    def stop(self) -> None:
        close_copies_held_by(self)
        self.close_workers()

    def close_workers(self) -> None:
        """Release the workers (processes, cluster, actors); called once by `stop`."""
