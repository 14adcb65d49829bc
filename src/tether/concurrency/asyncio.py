"""``async with concurrency(...)`` and ``await rate_limit(...)``, as ``prefect.concurrency.asyncio``."""

from __future__ import annotations

import asyncio as _asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tether.concurrency import _slots

__all__ = ["concurrency", "rate_limit"]


@asynccontextmanager
async def concurrency(names: str | list[str], occupy: int = 1, timeout_seconds: float | None = None,
                      **kw: Any) -> AsyncIterator[None]:
    """Hold the slots for the block; waiting for them does not block the event loop."""
    block = _slots.concurrency(names, occupy, timeout_seconds, **kw)
    await _asyncio.to_thread(block.__enter__)
    try:
        yield
    except BaseException as exc:
        block.__exit__(type(exc), exc, exc.__traceback__)
        raise
    else:
        block.__exit__(None, None, None)


async def rate_limit(names: str | list[str], occupy: int = 1, timeout_seconds: float | None = None,
                     **kw: Any) -> None:
    await _asyncio.to_thread(_slots.rate_limit, names, occupy, timeout_seconds, **kw)
