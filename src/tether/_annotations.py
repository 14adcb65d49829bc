"""Argument annotations: `allow_failure` and `quote`, as in Prefect.

- ``allow_failure(future)``, as an argument or in ``wait_for=``, makes the future an
  upstream whose failure does not stop the downstream: the downstream runs, and the
  argument resolves to the upstream's value, or to its exception if it did not
  complete. It also counts as looking at that failure, so it does not fail the flow.
- ``quote(value)`` passes ``value`` as it is: tether does not look inside it for
  futures (a large list of plain data is not walked).
- ``opaque(future)`` resolves the future (an upstream, as usual) but passes its value as
  it is, without looking inside it; around a value that is not a future, it is `quote`.

They are wrappers the argument walkers recognise; they hold a value and do nothing.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

T = TypeVar("T")


class allow_failure(Generic[T]):
    """Run the downstream even if this upstream fails; see the module docstring."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def unwrap(self) -> T:
        return self.value

    def __repr__(self) -> str:
        return f"allow_failure({self.value!r})"


class quote(Generic[T]):
    """Pass the value without looking inside it for futures; see the module docstring."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def unwrap(self) -> T:
        return self.value

    def unquote(self) -> T:
        return self.value

    def __repr__(self) -> str:
        return f"quote({self.value!r})"


class opaque(Generic[T]):
    """Resolve this future, but do not look inside its value; see the module docstring."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def unwrap(self) -> T:
        return self.value

    def __repr__(self) -> str:
        return f"opaque({self.value!r})"


def unwrap_annotation(value: Any) -> Any:
    """The value inside an `allow_failure`, `quote` or `opaque`, else ``value``."""
    return value.value if type(value) in (allow_failure, quote, opaque) else value
