"""A resource copy's ledger row, written by the worker process that holds the copy.

A task that receives a resource value and runs on another process makes that worker
open its own copy (see `tether.runners._worker`). The copy's row must be in the store before
its setup runs, wherever the worker is, and its cleanup must be recorded even if the
flow process is gone by then (SIGKILLed, say): so the worker writes its copy's steps
itself, each one committed before the worker goes on. A `LedgerTarget`, made in the
flow process by `ledger_target`, travels with the resource's reference and says
where (the flow's store), for which flow run, and with which reaper. The flow process
still emits the events of the steps a worker reports, for every recorder, but marks
those the worker wrote with ``details["stored_in"]`` (the store's URL), and that
store's recorder skips them: no row is written twice.

Steps are planned into rows and written as the flow process's own are (`_plan`,
`RowWriter`), one step per transaction, before `record_copy_step` returns; a thread
keeps the heartbeat of the copies this process holds (a worker on another host is
judged by it). A worker that cannot reach the store says so once and returns False:
the flow process then records the steps the worker reports with its results.

This module writes; it does not decide when a copy is opened or closed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import threading
import time
from typing import Any, NamedTuple

import sqlalchemy as sa

from tether.store._active import active_store
from tether.store._encode import reaper_file
from tether.store._ledger import ProcessInfo
from tether.store._migrate import open_engine
from tether.store._redact import redact_text, to_json
from tether.store._rows import RowWriter

log = logging.getLogger("tether.store")


class LedgerTarget(NamedTuple):
    """Where a worker writes the ledger rows of its copies of one resource scope."""

    url: sa.URL  # the flow's store, password included (it travels to the workers)
    flow_host: str  # a SQLite file is only this host's
    flow_run_id: str | None
    reaper: str | None  # "module:qualname"
    reaper_file: str | None  # the reaper's file, as the flow process knows it

    def __repr__(self) -> str:
        return f"<LedgerTarget {self.url!r} flow run {self.flow_run_id}>"


def ledger_target(flow_run_id: str | None, reaper: str | None) -> LedgerTarget | None:
    """Where the workers of this process's flow runs write their copies' rows; None when
    this process records to no store."""
    store = active_store()
    if store is None:
        return None
    return LedgerTarget(store.location.url, socket.gethostname(), flow_run_id, reaper, reaper_file(reaper))


def record_copy_step(
    target: LedgerTarget,
    step: str,
    scope_id: str,
    name: str,
    error: str | None = None,
    outcome: str | None = None,
    handle: Any = None,
    seconds: float | None = None,
) -> bool:
    """Write one step of this process's copy of a scope (``setup-started``, ``handle``,
    ``setup``, ``setup-failed``, ``cleanup``, ``cleanup-failed``); committed when this
    returns True. False: not written (no store reachable from here); the caller reports it."""
    ledger = _ledger_for(target)
    if ledger is None:
        return False
    process = ledger.rows.process
    record = (
        "resource", step, scope_id, name, target.flow_run_id, time.time(), None, error, outcome,
        process.host, process.pid, None if handle is None else json.dumps(to_json(handle, redact=False)),
        target.reaper, target.reaper_file, seconds,
    )  # fmt: skip
    try:
        ledger.write(record)
    except Exception as exc:  # noqa: BLE001 - the flow process records it from the report instead
        _warn_once(target, f"writing the step {step!r} of resource {name!r} failed", exc)
        return False
    return True


# -- one ledger per store and process ---------------------------------------------------


class _Ledger:
    """Writes the rows of this process's copies to one store, and keeps their heartbeat."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.rows = RowWriter(engine, ProcessInfo.current())
        self.lock = threading.Lock()
        self._beating: threading.Thread | None = None

    def write(self, record: tuple[Any, ...]) -> None:
        with self.lock:
            self.rows.send([record], everything=True)
            if self.rows.open_scopes and self._beating is None:
                self._beating = threading.Thread(target=self._beat, name="tether-ledger-heartbeat", daemon=True)
                self._beating.start()

    def _beat(self) -> None:
        while True:
            time.sleep(self.rows.heartbeat_every)
            try:
                with self.lock:
                    self.rows.tick()
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is retried at the next
                log.debug("tether: a heartbeat of this worker's resource copies failed: %r", exc)


_ledgers: dict[sa.URL, _Ledger | None] = {}
_ledgers_lock = threading.Lock()
_warned: set[sa.URL] = set()


def _ledger_for(target: LedgerTarget) -> _Ledger | None:
    ledger = _ledgers.get(target.url)
    if ledger is not None or target.url in _ledgers:
        return ledger
    with _ledgers_lock:
        if target.url in _ledgers:
            return _ledgers[target.url]
        ledger = None
        if not _reachable(target):
            _warn_once(target, f"it is on the flow's host, {target.flow_host}, and this is another", None)
        else:
            active = active_store()
            try:
                if active is not None and active.location.url == target.url:
                    engine = active.engine  # a worker in the flow's own process (a Dask cluster of threads)
                else:
                    engine = open_engine(target.url)[1]
                ledger = _Ledger(engine)
            except Exception as exc:  # noqa: BLE001 - StoreError, a driver that is not installed here...
                _warn_once(target, "the store cannot be opened", exc)
        _ledgers[target.url] = ledger
        return ledger


def _reachable(target: LedgerTarget) -> bool:
    """Whether the store the flow process records to is the one this process would open:
    a SQLite file, or a server on the loopback, only on the flow's own host."""
    if target.flow_host == socket.gethostname():
        return True
    if target.url.get_backend_name() == "sqlite":
        return False
    host = target.url.host or "localhost"
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name: the same server from here


def _warn_once(target: LedgerTarget, what: str, exc: BaseException | None) -> None:
    if target.url in _warned:
        return
    _warned.add(target.url)
    where = target.url.render_as_string(hide_password=True)
    why = f" ({redact_text(f'{type(exc).__name__}: {exc}')})" if exc is not None else ""
    log.warning(
        "tether: this worker (pid %d on %s) cannot write its resource copies to the run store %s: %s%s. "
        "The flow process records them from what the worker reports instead, so a copy whose task never "
        "returns (its worker killed, say) will be missing from the ledger. Make the store reachable from "
        "the workers (a database server named by a host name or address that reaches it from them, not a "
        "SQLite file, for workers on other hosts).",
        os.getpid(),
        socket.gethostname(),
        where,
        what,
        why,
    )


def _forget_in_child() -> None:
    global _ledgers_lock
    _ledgers_lock = threading.Lock()
    # The parent's rows name the parent's pid; its connections are the parent's.
    for ledger in _ledgers.values():
        if ledger is not None:
            ledger.engine.dispose(close=False)
    _ledgers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
