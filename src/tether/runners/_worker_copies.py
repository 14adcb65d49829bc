"""A worker process's copies of resources, as one `WorkerCopies` book per `WorkerRuntime`.

A resource value travels to a worker as a `ResourceRef` (the scope's id and how to open
the resource, never the value). Here, the worker:

- opens its own copy of each referenced scope on first use, once per (scope, worker),
  and reuses it for every later task of that scope here (a DB-API connection whose
  driver says ``threadsafety < 2`` serves one task at a time: `WorkerCopies.acquire`
  gives it a ``turn`` lock that the runtime takes before the body starts);
- closes a copy with the scope's outcome once the last task of the scope here has
  finished (drain, then tear down), or all of them, as failed, when the flow process is gone.

Each step of a copy is written to the run store's ledger here, by this process, before
it acts (`tether.store.record_copy_step`): the copy's row exists before its setup
runs, and its cleanup is recorded even when the flow process is gone, so a copy whose
call never returns is an orphan that ``tether reap`` finds, and a copy closed here is
never reaped. The reports say which steps were written (the flow process records the
others).

This module runs no task body and interrupts nothing (`_worker` does); it does not know
which runner it runs under.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from typing import Any

import cloudpickle

from tether._arguments import map_leaves
from tether._connections import unshareable_connection
from tether._errors import ResourceClosedError
from tether._resources import ResourceScope
from tether.runners._wire import CleanupReport, ResourceRef, dump_error, load_error
from tether.store import record_copy_step

#: Values a worker's setup may hand back to the flow process as they are (they open nothing).
_PLAIN_VALUES = frozenset({type(None), bool, int, float, complex, str, bytes})


class Copy:
    """This worker's copy of one resource scope."""

    def __init__(self, ref: ResourceRef) -> None:
        self.ref = ref
        self.scope: ResourceScope | None = None
        self.value: Any = None
        self.users = 0  # calls holding the copy (counted before setup, so cleanup drains setups too)
        self.closing = False
        self.parents: list[Copy] = []  # copies this one's setup received as arguments
        self.setup_lock = threading.Lock()
        self.turn: threading.Lock | None = None  # one task at a time: see `unshareable_connection`
        self.idle = threading.Condition()


class _CopyScope(ResourceScope):
    """The scope of a worker's copy: a handle its setup remembers goes to the ledger at once
    (a reaper needs it if this process dies before the setup ends)."""

    def __init__(self, ref: ResourceRef, resource: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__(resource, args, kwargs)
        self.ref = ref

    def _emit(self, step: str, **details: Any) -> None:
        ref = self.ref
        if step == "handle" and ref.ledger is not None:
            record_copy_step(ref.ledger, "handle", ref.scope_id, ref.name, handle=details.get("handle"))


class WorkerCopies:
    """The copies one worker holds, by scope id; ``worker`` and ``host`` name it in reports."""

    def __init__(self, worker: str, host: str) -> None:
        self.worker = worker
        self.host = host
        self._copies: dict[str, Copy] = {}
        #: Scopes whose copy was closed here (or that had none here when closed): a task of one
        #: that starts after that fails, rather than opening a copy that nobody would close.
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, ref: ResourceRef, reports: list[dict[str, Any]]) -> Copy:
        """Take a use of this worker's copy of ``ref``'s scope, setting it up on first use."""
        with self._lock:
            copy = self._copies.get(ref.scope_id)
            if copy is None and ref.scope_id not in self._closed:
                copy = self._copies[ref.scope_id] = Copy(ref)
            if copy is None or copy.closing:
                raise ResourceClosedError(
                    f"Resource {ref.name!r} was already cleaned up on worker {self.worker}, so a task "
                    "that started after its scope ended cannot use it."
                )
            with copy.idle:
                copy.users += 1
        try:
            with copy.setup_lock:
                if copy.scope is None:
                    self._set_up(copy, reports)
        except BaseException:
            self.release(copy)
            raise
        return copy

    def release(self, copy: Copy) -> None:
        with copy.idle:
            copy.users -= 1
            if copy.users == 0:
                copy.idle.notify_all()

    def open_refs(self, value: Any, held: list[Copy], reports: list[dict[str, Any]]) -> Any:
        """``value`` with each `ResourceRef` replaced by this worker's copy's value (each copy
        taken is added to ``held``, for the caller to release)."""

        def open_ref(leaf: Any) -> Any:
            if type(leaf) is not ResourceRef:
                return leaf
            copy = self.acquire(leaf, reports)
            held.append(copy)
            return copy.value

        return map_leaves(value, open_ref)

    def _set_up(self, copy: Copy, reports: list[dict[str, Any]]) -> None:
        ref = copy.ref
        attempt = uuid.uuid4().hex
        self._report(reports, "setup-started", ref, attempt)
        parents: list[Copy] = []
        try:
            resource, args, kwargs = cloudpickle.loads(ref.opener)
            if _holds_ref((args, kwargs)):
                args, kwargs = self.open_refs((args, kwargs), parents, reports)
            scope = _CopyScope(ref, resource, args, kwargs)
            value = scope.__enter__()  # no flow run here: a plain context manager
        except BaseException as exc:
            for parent in parents:
                self.release(parent)
            self._report(reports, "setup-failed", ref, attempt, error=f"{type(exc).__name__}: {exc}")
            raise
        copy.scope, copy.value, copy.parents = scope, value, parents
        if unshareable_connection(value):
            copy.turn = threading.Lock()
        report = self._report(reports, "setup", ref, attempt, handle=scope.handle)
        if type(value) in _PLAIN_VALUES:  # nothing to open: the flow body gets the value itself
            report["plain_value"] = value

    def _report(self, reports: list[dict[str, Any]], step: str, ref: ResourceRef, attempt: str, error: str | None = None, handle: Any = None) -> dict[str, Any]:
        """Write a step of this worker's copy to the ledger (before the act it announces), and
        report it to the flow process."""
        recorded = ref.ledger is not None and record_copy_step(ref.ledger, step, ref.scope_id, ref.name, error=error, handle=handle)
        report = {
            "step": step,
            "scope_id": ref.scope_id,
            "name": ref.name,
            "attempt": attempt,
            "timestamp": time.time(),
            "error": error,
            "handle": handle,
            "worker": self.worker,
            "host": self.host,
            "pid": os.getpid(),
            "recorded": recorded,
        }
        reports.append(report)
        return report

    def open(self, ref: ResourceRef) -> tuple[list[dict[str, Any]], bytes | None]:
        """Set up this worker's copy of ``ref``'s scope now; the copy steps, and the setup's error."""
        reports: list[dict[str, Any]] = []
        try:
            self.release(self.acquire(ref, reports))
        except BaseException as exc:  # noqa: BLE001 - the error travels to the `with` statement
            with self._lock:
                failed = self._copies.get(ref.scope_id)
                if failed is not None and failed.scope is None:
                    del self._copies[ref.scope_id]
            return reports, dump_error(exc)
        return reports, None

    def cleanup(self, scope_id: str, error: bytes | None, drain_seconds: float) -> CleanupReport:
        """Close this worker's copy of a scope, once no task of the scope runs here any more.

        ``error`` is the scope's first error (packed by `dump_error`), thrown in at the
        resource's ``yield``; None if the scope succeeded. Tasks still holding the copy
        (abandoned after a timeout, say) are waited for at most ``drain_seconds``. The
        cleanup is written to the ledger here, with its outcome.
        """
        with self._lock:
            self._closed[scope_id] = None
            if len(self._closed) > 10_000:
                self._closed.popitem(last=False)
            copy = self._copies.get(scope_id)
            if copy is None:
                return CleanupReport(scope_id, False, None, 0.0, 0, self.worker, self.host, os.getpid())
            copy.closing = True
        with copy.idle:
            copy.idle.wait_for(lambda: copy.users == 0, timeout=drain_seconds)
            still_running = copy.users
        started = time.monotonic()
        failure: str | None = None
        try:
            if copy.scope is not None:
                exc = load_error(error, "in the flow") if error is not None else None
                if exc is None:
                    copy.scope.__exit__(None, None, None)
                else:
                    copy.scope.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException as exc:  # noqa: BLE001 - reported to the flow process, which decides
            failure = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        finally:
            for parent in copy.parents:
                self.release(parent)
        seconds = time.monotonic() - started
        ref, recorded = copy.ref, False
        try:
            if copy.scope is not None and ref.ledger is not None:
                step = "cleanup" if failure is None else "cleanup-failed"
                outcome = "failed" if error is not None else "succeeded"
                recorded = record_copy_step(ref.ledger, step, scope_id, ref.name, error=failure, outcome=outcome, seconds=seconds)
        finally:
            # Only now is the copy gone: a worker that exits once it holds no copy (it answered
            # for a stuck call) must not exit between the cleanup and the cleanup's ledger row.
            with self._lock:
                self._copies.pop(scope_id, None)
        return CleanupReport(scope_id, copy.scope is not None, failure, seconds, still_running, self.worker, self.host, os.getpid(), recorded)

    def close_all(self, reason: str) -> None:
        """Close every copy still held here, as failed (the flow process is gone)."""
        error = dump_error(RuntimeError(reason))
        with self._lock:
            scope_ids = list(self._copies)
        # Nested copies first: a copy's parents were acquired before it, so close newest first.
        for scope_id in reversed(scope_ids):
            self.cleanup(scope_id, error, 0.0)

    def holds_any(self) -> bool:
        with self._lock:
            return bool(self._copies)


def _holds_ref(value: Any) -> bool:
    found = False

    def check(leaf: Any) -> Any:
        nonlocal found
        found = found or type(leaf) is ResourceRef
        return leaf

    map_leaves(value, check)
    return found
