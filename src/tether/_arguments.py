"""Walking a call's arguments: finding futures and resource values, rebuilding containers.

Futures and resource values may sit inside lists, tuples, dicts, sets, frozensets,
dataclasses and pydantic models, at any depth. Every walk goes through `members` and
`rebuild`, so every walker agrees on what a container is and rebuilds it one way
(a ``defaultdict`` stays a ``defaultdict``, a namedtuple a namedtuple). A visitor sees
a container before its members, so a container that is itself a resource's value
(a resource may yield a dict) is found as such, not taken apart.

`allow_failure`, `quote` and `opaque` wrappers (see `_annotations`) are resolved here: a
quoted value is passed as it is, unwalked; an ``opaque`` future becomes its value, unwalked;
an ``allow_failure`` one resolves its futures to their values or, for those that did not
complete, to their exceptions.

This module knows nothing of resources or runs: the visitors are the callers'.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from tether._annotations import allow_failure, opaque, quote
from tether._core import StateType
from tether._futures import TaskFuture

_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes, TaskFuture})


def members(value: Any) -> list[Any] | None:
    """What ``value`` contains, if it is a container the walkers enter; else None.

    A dict's members are its keys and values, alternating."""
    kind = type(value)
    if kind in _ATOMS:
        return None
    if isinstance(value, dict):
        return [item for pair in value.items() for item in pair]
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    if hasattr(kind, "__dataclass_fields__") and not isinstance(value, type):
        return [getattr(value, f.name) for f in dataclasses.fields(value)]
    if _is_model(value):
        return [getattr(value, name) for name in kind.model_fields]
    return None


def labelled_members(value: Any) -> list[tuple[str, Any]] | None:
    """`members`, each with where it sits, as a reader writes it after the container's name:
    ``[0]``, ``['key']``, ``.field``; ``an item of`` for a set's (which have no place)."""
    inside = members(value)
    if inside is None:
        return None
    if isinstance(value, dict):
        return [(f"[{key!r}]", item) for key, item in value.items()]
    if isinstance(value, (list, tuple)):
        return [(f"[{i}]", item) for i, item in enumerate(inside)]
    if isinstance(value, (set, frozenset)):
        return [("an item of", item) for item in inside]
    names = [f.name for f in dataclasses.fields(value)] if hasattr(type(value), "__dataclass_fields__") else list(type(value).model_fields)
    return [(f".{name}", item) for name, item in zip(names, inside)]


def rebuild(container: Any, new_members: list[Any]) -> Any:
    """A container like ``container`` (same type, same extra state) holding ``new_members``."""
    kind = type(container)
    if isinstance(container, dict):
        rebuilt = _shallow_copy(container, dict)
        rebuilt.clear()
        rebuilt.update(zip(new_members[::2], new_members[1::2]))
        return rebuilt
    if isinstance(container, list):
        rebuilt = _shallow_copy(container, list)
        rebuilt[:] = new_members
        return rebuilt
    if isinstance(container, set):
        rebuilt = _shallow_copy(container, set)
        rebuilt.clear()
        rebuilt.update(new_members)
        return rebuilt
    if isinstance(container, (tuple, frozenset)):
        base = tuple if isinstance(container, tuple) else frozenset
        try:
            if base is tuple and hasattr(container, "_fields"):  # a namedtuple
                return kind(*new_members)
            return kind(new_members)
        except Exception:  # noqa: BLE001 - a subclass with another constructor: its builtin base will do
            return base(new_members)
    if hasattr(kind, "__dataclass_fields__"):
        rebuilt = copy.copy(container)
        for field, member in zip(dataclasses.fields(container), new_members):
            name = field.name
            object.__setattr__(rebuilt, name, member)  # frozen dataclasses too
        return rebuilt
    if _is_model(container):
        return container.model_copy(update=dict(zip(kind.model_fields, new_members)))
    raise TypeError(f"{kind.__name__} is not a container the argument walkers know")


def walk(value: Any, visit: Callable[[Any], bool]) -> None:
    """Call ``visit`` on ``value`` and, unless it returns True ("found, do not enter"),
    on everything inside it, containers before their members."""
    if visit(value):
        return
    inside = members(value)
    if inside:
        for member in inside:
            walk(member, visit)


def rewrite(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with ``fn`` applied to it and, where ``fn`` leaves a container as it is,
    to everything inside it. A container is rebuilt only when something inside changed,
    so an argument without futures or resources comes back as the very same object."""
    new = fn(value)
    if new is not value:
        return new
    inside = members(value)
    if not inside:
        return value
    changed = [rewrite(member, fn) for member in inside]
    if all(new is old for new, old in zip(changed, inside)):
        return value
    return rebuild(value, changed)


def resolve(value: Any) -> Any:
    """``value`` with every future replaced by its run's result, and `allow_failure` /
    `quote` wrappers replaced by what they hold (resolved, for ``allow_failure``)."""
    return rewrite(value, _result_of)


def strip_quotes(value: Any) -> Any:
    """``value`` with each `quote` replaced by what it holds, and each `allow_failure`
    that holds no future by its value: what is left to `resolve` once upstreams finish."""

    def unwrap(node: Any) -> Any:
        kind = type(node)
        if kind is quote or (kind is opaque and type(node.value) is not TaskFuture):
            return node.value
        if kind is allow_failure and not _holds_future(node.value):
            return node.value
        return node

    return rewrite(value, unwrap)


def _holds_future(value: Any) -> bool:
    found: list[Any] = []

    def visit(node: Any) -> bool:
        if type(node) is TaskFuture:
            found.append(node)
        return bool(found) or type(node) is quote

    walk(value, visit)
    return bool(found)


def map_leaves(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with ``fn`` applied to every leaf (anything that is not a container)."""
    inside = members(value)
    if inside is None:
        return fn(value)
    return rebuild(value, [map_leaves(member, fn) for member in inside])


def _result_of(value: Any) -> Any:
    kind = type(value)
    if kind is TaskFuture:
        state = value._run.record.state
        # Only an allow_failure'd upstream reaches here without having completed.
        return state.data if state.type is StateType.COMPLETED else state.error()
    if kind is quote:
        return value.value
    if kind is opaque:
        return _result_of(value.value)  # the future's value, not walked into
    if kind is allow_failure:
        return resolve(value.value)
    return value


def _shallow_copy(container: Any, base: type) -> Any:
    try:
        return copy.copy(container)
    except Exception:  # noqa: BLE001 - a subclass that will not copy: its builtin base will do
        return base(container)


def _is_model(value: Any) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, pydantic.BaseModel) and not isinstance(value, type)
