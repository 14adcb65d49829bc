"""Live pages: the store's change token, polled once for every open page, sent as server-sent events.

One `ChangeWatcher` asks the store for `tether.store.change_token` at most every
``interval`` seconds, however many pages listen (a cheap query: the newest ids and
a few maxima), on SQLite and PostgreSQL alike. `event_stream` sends a page the
token whenever it differs from the one the page was rendered with; the page's
script then fetches its own content again and swaps it in. A stream ends after
``lifetime`` seconds and the browser reconnects (EventSource does), so a
stopping server never waits long for its streams. This module does not render.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.concurrency import run_in_threadpool


class ChangeWatcher:
    def __init__(self, read_token: Callable[[], str], interval: float = 0.5) -> None:
        self._read = read_token
        self.interval = interval
        self._lock = threading.Lock()
        self._token = ""
        self._read_at = float("-inf")

    def token(self) -> str:
        """The store's change token, read again only if the last read is older than ``interval``."""
        with self._lock:
            if time.monotonic() - self._read_at >= self.interval:
                self._token = self._read()
                self._read_at = time.monotonic()
            return self._token


async def event_stream(
    watcher: ChangeWatcher, seen: str, is_gone: Callable[[], Awaitable[bool]], lifetime: float = 30.0
) -> AsyncIterator[str]:
    """``data: <token>`` each time the store changes from ``seen``; ends after ``lifetime`` seconds."""
    yield "retry: 1000\n\n"
    started = time.monotonic()
    quiet_since = started
    while time.monotonic() - started < lifetime:
        current = await run_in_threadpool(watcher.token)
        if current != seen:
            seen = current
            quiet_since = time.monotonic()
            yield f"data: {current}\n\n"
        elif time.monotonic() - quiet_since > 10:
            quiet_since = time.monotonic()
            yield ": idle\n\n"  # a comment keeps proxies from closing a quiet stream
        if await is_gone():
            return
        await asyncio.sleep(watcher.interval)
