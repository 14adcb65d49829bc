"""Reaping: close orphaned resources from another process with their reapers.

A reaper is named in the ledger as ``"module:qualname"``; it is imported (or, for
a reaper defined in a script, loaded from the script's file without running it
as ``__main__``) and called with the handle that setup remembered. Each orphan is
claimed in the ledger first, so two ``tether reap`` at once do not reap one
resource twice. A reaper that raises is recorded and reported; the others still run.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether.store._records import LedgerEntry
from tether.store._redact import redact_text
from tether.store._store import Store


class ReaperNotFound(Exception):
    """The reaper named in the ledger cannot be imported."""


@dataclass(frozen=True)
class ReapResult:
    entry: LedgerEntry
    #: ``reaped``, ``failed``, ``no-reaper``, ``would-reap`` (dry run) or ``taken`` (another process claimed it).
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
        elif not store.claim_for_reaping(entry.id):
            results.append(ReapResult(entry, "taken"))
        else:
            results.append(_reap_one(store, entry))
    return results


def _reap_one(store: Store, entry: LedgerEntry) -> ReapResult:
    assert entry.reaper is not None
    started = time.monotonic()
    error: str | None = None
    try:
        reaper = load_reaper(entry.reaper, entry.reaper_file)
        reaper(entry.handle)
    except Exception as exc:  # noqa: BLE001 - one reaper's failure must not stop the others
        error = redact_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    seconds = time.monotonic() - started
    store.record_reap(entry.id, error, seconds)
    return ReapResult(entry, "reaped" if error is None else "failed", error, seconds)


def load_reaper(path: str, file: str | None = None) -> Callable[[Any], Any]:
    """The function named ``"module:qualname"``; from ``file`` if the module cannot be imported."""
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
            raise ReaperNotFound(f"The reaper {path!r}: module {module.__name__!r} has no {qualname!r}.") from None
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
    except BaseException:
        del sys.modules[name]
        raise
    return module
