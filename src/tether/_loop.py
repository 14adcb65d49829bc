"""The event loop the engine keeps for async tasks: one daemon thread, started on first use."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def engine_loop() -> asyncio.AbstractEventLoop:
    global _loop
    if _loop is None:
        with _lock:
            if _loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="tether-event-loop", daemon=True)
                thread.start()
                _loop = loop
    return _loop


def run_on_engine_loop(coro: Coroutine[Any, Any, Any]) -> Future[Any]:
    """Schedule ``coro`` on the engine's loop from any thread."""
    return asyncio.run_coroutine_threadsafe(coro, engine_loop())
