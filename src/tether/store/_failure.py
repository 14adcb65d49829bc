"""What the recorder says when the store fails, and how many records that loses."""

from __future__ import annotations

from typing import Any

from tether.store._encode import split_records
from tether.store._errors import StoreError
from tether.store._location import StoreLocation
from tether.store._redact import redact_text
from tether.store._writer_process import WriterProcessFailed

#: Records are about this many items long on average: the recorder's flat queue counts its batch in
#: items, and a count of records that cannot be split is rough.
ITEMS_PER_RECORD = 9


def failure_message(location: StoreLocation, flows: dict[str, str], exc: BaseException) -> str:
    """The one warning of a failed store: which flow runs (id -> name) go unrecorded, why, and how to fix it."""
    if flows:
        shown = ", ".join(f"{name!r} ({run_id})" for run_id, name in list(flows.items())[:5])
        more = f" and {len(flows) - 5} more" if len(flows) > 5 else ""
        what = f"flow run(s) {shown}{more} and every later run in this process"
    else:
        what = "every run in this process from now on"
    lost = f"The flow keeps running, but {what} will be missing from the store: states, logs and resource ledger rows are not recorded."
    if isinstance(exc, StoreError):  # the store could not be opened: the error says where, why and the fix
        return f"tether: {redact_text(str(exc))} {lost}"
    failed = getattr(exc, "orig", None) or exc
    reason = str(exc) if isinstance(exc, WriterProcessFailed) else f"{type(exc).__name__}: {failed}"
    reason = redact_text(reason.splitlines()[0] if reason else type(exc).__name__)
    where = location.shown
    fix = (
        f"check that {where} is writable and its disk is not full"
        if location.is_sqlite
        else "check that the database server is up and TETHER_DATABASE_URL is right"
    )
    return (
        f"tether: the run store {where} failed ({reason}). {lost} To fix: {fix}, then run again."
    )


def count_records(items: list[Any]) -> int:
    """How many records ``items`` (laid flat) holds, for the count of those not recorded."""
    try:
        return len(split_records(items))
    except (KeyError, TypeError):  # not whole records: a bug; count them roughly
        return len(items) // ITEMS_PER_RECORD
