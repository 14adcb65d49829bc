"""``from tether.concurrency.sync import concurrency, rate_limit``, as in Prefect."""

from tether.concurrency._slots import concurrency, rate_limit

__all__ = ["concurrency", "rate_limit"]
