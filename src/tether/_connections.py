"""What a DB-API connection allows about threads, asked of its driver and of sqlite3.

A connection whose driver declares ``threadsafety`` below 2 (PyMySQL, mysql-connector) must
not be used by two threads at once, so its resource's tasks take turns; a default `sqlite3`
connection may only be used, and closed, on the thread that made it, so its cleanup runs on
that thread (see `_mailbox`). This module only answers; `_resources` and the worker side act.
"""

from __future__ import annotations

import sys
from typing import Any


def unshareable_connection(value: Any) -> bool:
    """True for a DB-API connection whose driver declares ``threadsafety`` below 2."""
    if not all(callable(getattr(value, m, None)) for m in ("cursor", "commit", "rollback", "close")):
        return False
    module = type(value).__module__
    while module:
        driver = sys.modules.get(module)
        if driver is not None and hasattr(driver, "threadsafety") and hasattr(driver, "apilevel"):
            return int(driver.threadsafety) < 2
        module = module.rpartition(".")[0]
    return False


def thread_bound(value: Any) -> bool:
    """True if ``value`` may only work on the thread that made it (a `sqlite3` connection)."""
    sqlite3 = sys.modules.get("sqlite3")
    return sqlite3 is not None and isinstance(value, sqlite3.Connection)


def refuses_this_thread(value: Any) -> bool:
    """True if ``value`` (a sqlite3 connection) may not be used on the calling thread."""
    sqlite3 = sys.modules["sqlite3"]
    try:
        if hasattr(value, "getlimit"):
            value.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        else:
            value.cursor().close()
    except sqlite3.ProgrammingError:  # made on another thread (or closed): ask its own thread
        return True
    return False
