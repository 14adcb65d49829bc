"""What a flow body holds for a resource whose tasks run in other processes.

With a process pool, Dask or Ray, the flow process opens no copy of a resource at the
``with`` statement; the flow body gets a `StandIn` instead. Passed to a submitted task,
it becomes that worker's own copy. Used here, by a called task or by the flow body (an
attribute, a call, iteration, ``with``...), it opens this process's own copy on first
use and forwards to it. It never pickles. This module does not open anything itself:
its scope (`LocalCopy`) does.
"""

from __future__ import annotations

from typing import Any, Protocol

from tether._arguments import rewrite
from tether._runtime import Part


class LocalCopy(Protocol):
    """What a stand-in needs of its scope."""

    name: str

    def local_value(self) -> Any: ...

    def opened_here(self) -> bool: ...


#: Ids of the scopes whose flow body holds a stand-in (the runtime's).
_open: Part[set[str]] = Part("stand-ins held", lambda runtime: set())


def holding(scope_id: str) -> None:
    """A flow body holds a stand-in of scope ``scope_id`` (so calls must look for it)."""
    _open().add(scope_id)


def released(scope_id: str) -> None:
    _open().discard(scope_id)


class StandIn:
    """What a flow body holds for a resource whose tasks run in other processes.

    Passed to a submitted task, it becomes that worker's own copy. Used here, by a
    called task or by the flow body (an attribute, a call, iteration, ``with``...), it
    opens this process's own copy on first use and forwards to it. ``isinstance``
    sees the stand-in; ``tether.resources.local(value)`` gives this process's copy.
    """

    __slots__ = ("_tether_scope", "__weakref__")

    _tether_scope: LocalCopy

    def __init__(self, scope: LocalCopy) -> None:
        object.__setattr__(self, "_tether_scope", scope)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tether_scope.local_value(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._tether_scope.local_value(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._tether_scope.local_value(), name)

    def __dir__(self) -> list[str]:
        return dir(self._tether_scope.local_value())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._tether_scope.local_value()(*args, **kwargs)

    def __iter__(self) -> Any:
        return iter(self._tether_scope.local_value())

    def __len__(self) -> int:
        return len(self._tether_scope.local_value())

    def __getitem__(self, key: Any) -> Any:
        return self._tether_scope.local_value()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._tether_scope.local_value()[key] = value

    def __contains__(self, item: Any) -> bool:
        return item in self._tether_scope.local_value()

    def __bool__(self) -> bool:
        return bool(self._tether_scope.local_value())

    def __enter__(self) -> Any:
        return self._tether_scope.local_value().__enter__()

    def __exit__(self, *exc_info: object) -> Any:
        return self._tether_scope.local_value().__exit__(*exc_info)

    def __reduce_ex__(self, protocol: Any) -> Any:
        name = self._tether_scope.name
        raise TypeError(
            f"a value of resource {name!r} cannot be pickled: pass it to the task as an argument "
            "(each worker then opens its own copy) instead of capturing it or storing it in an object"
        )

    def __repr__(self) -> str:
        scope = self._tether_scope
        where = "opened here too" if scope.opened_here() else "each worker opens its own copy"
        return f"<value of resource {scope.name!r} ({where})>"


def local(value: Any) -> Any:
    """This process's copy of a resource value (a `StandIn` is opened here); anything else as it is."""
    return value._tether_scope.local_value() if type(value) is StandIn else value


def local_arguments(args: Any, kwargs: Any) -> tuple[Any, Any]:
    """``args`` and ``kwargs`` with each `StandIn` replaced by this process's copy."""
    if not _open():  # the usual case (no remote runner): nothing to walk
        return args, kwargs
    return rewrite((args, kwargs), local)  # type: ignore[no-any-return]
