"""Concurrency limits by tag, as ``tether limit set TAG N`` does from the shell.

With the run store on (the default), a limit lives in the store and holds across
the processes sharing it (a SQLite store: on its machine; PostgreSQL: on every
machine); its slots are locks that die with their holder (`tether._leases`). With
the store off (``TETHER_STORE=off``), it holds in this process only.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether._errors import UsageError
from tether._leases import use_store
from tether._limits import limiter
from tether._runtime import Part
from tether.store import enable as enable_store

__all__ = ["LimitInfo", "decay_of", "get", "ls", "remove", "set"]

#: slot_decay_per_second by tag, for `tether.concurrency` rate_limit (kept in this process's runtime).
_decay: Part[dict[str, float]] = Part("limit decays", lambda runtime: {})


@dataclass(frozen=True)
class LimitInfo:
    tag: str
    capacity: int
    held: int
    waiting: int


def _check(tag: str, capacity: int | None = None) -> None:
    if not isinstance(tag, str) or not tag:
        raise UsageError(f"A limit needs a non-empty tag name, not {tag!r}.")
    if capacity is not None and (not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0):
        raise UsageError(f"The limit for tag {tag!r} must be a whole number >= 0, not {capacity!r}.")


def set(tag: str, capacity: int, slot_decay_per_second: float | None = None) -> None:
    """At most ``capacity`` task runs carrying ``tag`` run at once (0: none may run).

    ``slot_decay_per_second``: `tether.concurrency.sync.rate_limit` lets that many calls
    through per second (kept in this process).
    """
    _check(tag, capacity)
    if slot_decay_per_second is not None:
        if isinstance(slot_decay_per_second, bool) or not isinstance(slot_decay_per_second, (int, float)) \
                or slot_decay_per_second <= 0:
            raise UsageError(f"The limit for tag {tag!r} needs slot_decay_per_second > 0, not {slot_decay_per_second!r}.")
        _decay()[tag] = float(slot_decay_per_second)
    else:
        _decay().pop(tag, None)
    store = enable_store()
    if store is None:
        limiter().set_limit(f"tag:{tag}", capacity)
        return
    store.set_limit(tag, capacity)
    use_store(store, limiter())


def get(tag: str) -> int | None:
    _check(tag)
    store = enable_store()
    if store is None:
        return limiter().limit(f"tag:{tag}")
    return store.limits().get(tag)


def decay_of(tag: str) -> float | None:
    """The ``slot_decay_per_second`` set for ``tag`` in this process, or None."""
    return _decay().get(tag)


def remove(tag: str) -> bool:
    """Remove the limit on ``tag`` and free every slot held under it."""
    _check(tag)
    _decay().pop(tag, None)
    store = enable_store()
    if store is None:
        existed = limiter().limit(f"tag:{tag}") is not None
        limiter().remove_limit(f"tag:{tag}")
        return existed
    broker = use_store(store, limiter())
    existed = broker.table.drop_limit(tag) is not None
    broker.refresh()
    return existed


def ls() -> list[LimitInfo]:
    store = enable_store()
    if store is None:
        return [LimitInfo(key[4:], c, h, w) for key, (c, h, w) in limiter().limits().items() if key.startswith("tag:")]
    broker = use_store(store, limiter())
    return [LimitInfo(v.tag, v.capacity, len(v.holders), v.waiting) for v in broker.table.limit_views()]
