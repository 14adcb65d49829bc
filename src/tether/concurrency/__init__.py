"""Prefect's ``prefect.concurrency``: `sync` and `asyncio` hold ``concurrency`` and ``rate_limit``."""

from tether.concurrency import asyncio, sync

__all__ = ["asyncio", "sync"]
