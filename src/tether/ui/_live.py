"""Live pages: the store's change token, watched once for every open page, sent as server-sent events.

One `ChangeWatcher` serves every open page. On SQLite it asks the store for
`tether.store.change_token` at most every ``interval`` seconds (a cheap query: the
newest ids and a few maxima). Given the store's ``wait_for_change`` (on PostgreSQL,
where the store LISTENs for the ``NOTIFY`` every committed batch of records sends),
one thread of its own waits on it, and the token is read again only when a change
was notified, so the pages hear of a commit at once and an idle dashboard sends no
query; a slow poll every ``fallback_seconds`` still catches what the store writes
without notifying (slot and deployment tables).

`event_stream` sends a page the token whenever it differs from the one the page was
rendered with; the page's script then fetches its own content again and swaps it in.
A stream ends after ``lifetime`` seconds and the browser reconnects (EventSource
does), so a stopping server never waits long for its streams. This module does not render.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.concurrency import run_in_threadpool

log = logging.getLogger("tether.ui")

#: How long the watching thread waits for a notification at a time (it looks whether to stop in between).
WAIT_SLICE_SECONDS = 1.0
#: How often an event stream looks whether its page went away while no change came.
STREAM_SLICE_SECONDS = 1.0


class ChangeWatcher:
    def __init__(
        self,
        read_token: Callable[[], str],
        interval: float = 0.5,
        wait_for_change: Callable[[float], bool] | None = None,
        fallback_seconds: float = 5.0,
    ) -> None:
        self._read = read_token
        self.interval = interval
        self._wait = wait_for_change
        self.fallback_seconds = fallback_seconds
        self._lock = threading.Lock()
        self._token = ""
        self._read_at = float("-inf")
        #: A change was notified since the token was last read.
        self._dirty = True
        #: Grows with every notified change; a stream waits for it to move.
        self.version = 0
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def notified(self) -> bool:
        """Whether changes are pushed by the store (PostgreSQL) rather than polled for."""
        return self._wait is not None

    def token(self) -> str:
        """The store's change token: read again after a notified change (or every ``fallback_seconds``),
        or, when polling, if the last read is older than ``interval``."""
        self._start()
        with self._lock:
            age = time.monotonic() - self._read_at
            if (self._dirty or age >= self.fallback_seconds) if self.notified else age >= self.interval:
                self._dirty = False  # before the read: a change notified during it marks it dirty again
                self._token = self._read()
                self._read_at = time.monotonic()
            return self._token

    async def changed_since(self, version: int, timeout: float) -> None:
        """Return once a change was notified after ``version`` was read, or after ``timeout`` seconds
        (polling: after ``interval``, or ``timeout`` if shorter)."""
        if not self.notified:
            await asyncio.sleep(min(self.interval, timeout))
            return
        self._start()
        listener = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if self.version != version:
                return
            self._listeners.add(listener)
        try:
            await asyncio.wait_for(listener[1].wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                self._listeners.discard(listener)

    def close(self) -> None:
        """Stop the watching thread (it ends within `WAIT_SLICE_SECONDS`)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(WAIT_SLICE_SECONDS * 3)

    def _start(self) -> None:
        if self._wait is None or self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                # The first wait opens the store's listening connection (or finds it cannot) before the first
                # token is read, so no change committed after that read goes unheard.
                try:
                    self._wait(0)
                except Exception as exc:  # noqa: BLE001 - the thread tries again; the slow poll still runs
                    log.debug("tether ui: cannot wait for the store's changes (%s).", exc)
                self._dirty = True
                self._thread = threading.Thread(target=self._watch, name="tether-ui-changes", daemon=True)
                self._thread.start()

    def _watch(self) -> None:
        wait = self._wait
        assert wait is not None
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                changed = wait(WAIT_SLICE_SECONDS)
            except Exception as exc:  # noqa: BLE001 - the pages still poll every fallback_seconds
                log.debug("tether ui: waiting for the store's changes failed (%s); trying again.", exc)
                changed = False
            if changed:
                self._changed()
            elif time.monotonic() - began < WAIT_SLICE_SECONDS / 2:
                self._stop.wait(WAIT_SLICE_SECONDS)  # it returned at once (a closed store): do not spin

    def _changed(self) -> None:
        with self._lock:
            self._dirty = True
            self.version += 1
            listeners = list(self._listeners)
        for loop, event in listeners:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass  # that stream's loop is closed: its page is gone


async def event_stream(
    watcher: ChangeWatcher, seen: str, is_gone: Callable[[], Awaitable[bool]], lifetime: float = 30.0
) -> AsyncIterator[str]:
    """``data: <token>`` each time the store changes from ``seen``; ends after ``lifetime`` seconds."""
    yield "retry: 1000\n\n"
    started = time.monotonic()
    quiet_since = started
    while time.monotonic() - started < lifetime:
        version = watcher.version
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
        await watcher.changed_since(version, STREAM_SLICE_SECONDS)
