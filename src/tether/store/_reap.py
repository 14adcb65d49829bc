"""Reaping: close orphaned resources from another process with their reapers.

A reaper is named in the ledger as ``"module:qualname"``; it is imported (or, for
a reaper defined in a script, loaded from the script's file without running it
as ``__main__``) and called with the handle that setup remembered. Loading and
calling it happen under `tether._reaping.reaping`, so a flow call met on the way
(a script that calls its flow at its top level) does not run: the script's loading
stops there, and what it defined above that line is used.

Each orphan is claimed in the ledger first, by a claim that names this process
(host, pid, start time), so two ``tether reap`` at once do not reap one resource
twice, and a reap that was killed mid-way leaves a claim a later reap sees is dead
and takes over. While the reaper runs, the row's heartbeat is renewed, so a reap on
another host sees this one alive. The outcome is recorded only while the claim still
holds the row: a cleanup recorded meanwhile by the copy's own process is final.
A reaper that raises is recorded and reported; the others still run.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from tether._reaping import FlowCalledWhileReaping, reaping
from tether._settings import heartbeat_seconds
from tether.store._errors import ReaperNotFound
from tether.store._records import LedgerEntry
from tether.store._redact import redact_text
from tether.store._store import Store

log = logging.getLogger("tether.store")


@dataclass(frozen=True)
class ReapResult:
    entry: LedgerEntry
    #: ``reaped``, ``failed``, ``no-reaper``, ``would-reap`` (dry run), ``taken`` (another process
    #: claimed or closed it first), or ``closed-meanwhile`` (the reaper ran, but meanwhile the row's
    #: own process recorded its cleanup, or it was closed by hand: the ledger keeps that).
    outcome: str
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"resource": self.entry.as_dict(), "outcome": self.outcome, "error": self.error, "seconds": self.seconds}


def reap_orphans(
    store: Store, dry_run: bool = False, now: float | None = None, stale_after: float | None = None
) -> list[ReapResult]:
    """Run the reaper of every orphan and record each outcome in the ledger."""
    results = []
    for entry in store.orphans(now=now, stale_after=stale_after):
        if not entry.reaper:
            results.append(ReapResult(entry, "no-reaper"))
        elif dry_run:
            results.append(ReapResult(entry, "would-reap"))
        else:
            claim = store.claim_for_reaping(entry)
            results.append(ReapResult(entry, "taken") if claim is None else _reap_one(store, entry, claim))
    return results


def _reap_one(store: Store, entry: LedgerEntry, claim: str) -> ReapResult:
    assert entry.reaper is not None
    started = time.monotonic()
    error: str | None = None
    with reaping(entry.reaper), _heartbeat(store, entry.id, claim):
        try:
            reaper = load_reaper(entry.reaper, entry.reaper_file)
            reaper(entry.handle)
        except FlowCalledWhileReaping as exc:  # the reaper itself called a flow
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - one reaper's failure must not stop the others
            error = redact_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    seconds = time.monotonic() - started
    if not store.record_reap(entry.id, error, seconds, claim=claim):
        return ReapResult(entry, "closed-meanwhile", error, seconds)
    return ReapResult(entry, "reaped" if error is None else "failed", error, seconds)


@contextmanager
def _heartbeat(store: Store, entry_id: int, claim: str) -> Iterator[None]:
    """Renew the row's heartbeat while the reaper runs, so a reap on another host sees this one alive."""
    stop = threading.Event()
    every = heartbeat_seconds()

    def beat() -> None:
        while not stop.wait(every):
            try:
                if not store.beat_reaping(entry_id, claim):
                    return  # no longer ours: closed, or taken over
            except SQLAlchemyError as exc:
                log.debug("tether reap: could not renew the heartbeat of ledger row #%s: %s", entry_id, exc)

    thread = threading.Thread(target=beat, name=f"tether-reap-heartbeat-{entry_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def load_reaper(path: str, file: str | None = None) -> Callable[[Any], Any]:
    """The function named ``"module:qualname"``; from ``file`` if the module cannot be imported.

    Loading runs no flow (see `tether._reaping`), whoever calls this.
    """
    with reaping(path):
        return _load_reaper(path, file)


def _load_reaper(path: str, file: str | None) -> Callable[[Any], Any]:
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ReaperNotFound(f"The reaper {path!r} is not of the form 'module:function'.")
    if "<locals>" in qualname:
        raise ReaperNotFound(
            f"The reaper {path!r} is defined inside a function, so no other process can import it. "
            "Define it at the top level of a module."
        )
    module = None
    if module_name != "__main__":
        try:
            module = importlib.import_module(module_name)
        except FlowCalledWhileReaping as exc:
            raise ReaperNotFound(
                f"The reaper {path!r}: importing module {module_name!r} calls flow {exc.flow_name!r}, and reaping "
                'never runs a flow. Call the flow under `if __name__ == "__main__":`, or only from other modules.'
            ) from None
        except ImportError:
            if not file:
                raise
        if module is not None and file and not _is_file_of(module, file):
            module = None  # a different module of that name: the one in the ledger is the file
    if module is None:
        module = _load_file(path, file)
    target: Any = module
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            stopped = getattr(module, _STOPPED_AT_FLOW, None)
            hint = (
                f" Its loading stopped at a top-level call of flow {stopped!r}, which reaping does not run: "
                'define the reaper above that call, or call the flow under `if __name__ == "__main__":`.'
                if stopped
                else ""
            )
            raise ReaperNotFound(
                f"The reaper {path!r}: module {module.__name__!r} has no {qualname!r}.{hint}"
            ) from None
    if not callable(target):
        raise ReaperNotFound(f"The reaper {path!r} is a {type(target).__name__}, not a function.")
    return target  # type: ignore[no-any-return]


def _is_file_of(module: Any, file: str) -> bool:
    own = getattr(module, "__file__", None)
    try:
        return own is not None and os.path.samefile(own, file)
    except OSError:
        return False


def _load_file(path: str, file: str | None) -> Any:
    if not file or not os.path.exists(file):
        raise ReaperNotFound(
            f"The reaper {path!r} was defined in a script run as __main__ "
            + (f"({file}), which no longer exists." if file else "and its file is unknown.")
        )
    name = "tether_reaper_" + hashlib.sha1(file.encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ReaperNotFound(f"The reaper {path!r}: cannot load {file}.")
    module = importlib.util.module_from_spec(spec)
    directory = os.path.dirname(file)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # so the script's own imports of its neighbours work
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except FlowCalledWhileReaping as exc:
        # What the script defined above its flow call is there: the reaper, normally.
        log.warning("tether reap: %s (in %s)", exc, file)
        setattr(module, _STOPPED_AT_FLOW, exc.flow_name)
    except SystemExit as exc:
        del sys.modules[name]
        raise ReaperNotFound(
            f"The reaper {path!r}: loading {file} exited (sys.exit({exc.code!r}) at its top level). "
            'Put that code under `if __name__ == "__main__":`.'
        ) from None
    except BaseException:
        del sys.modules[name]
        raise
    return module


#: Set on a script's module whose loading stopped at a flow call: the flow's name.
_STOPPED_AT_FLOW = "__tether_stopped_at_flow__"
