"""Prefect 3's variables (``prefect.variables``): named JSON values kept in the run store.

    from tether.variables import Variable

    Variable.set("answer", 42)                  # ValueError if it exists, unless overwrite=True
    Variable.set("answer", 43, overwrite=True)
    Variable.get("answer")                      # 43; Variable.get("nothing", default=0) -> 0
    Variable.unset("answer")                    # True; False if there was none

In async code ``Variable.get`` (``set``, ``unset``) returns an awaitable, as in Prefect;
``aget``, ``aset`` and ``aunset`` are the async forms. Names follow Prefect's rule
(lowercase letters, numbers, dashes and underscores; at most 255 characters) and values
must be JSON (a str, number, bool, None, list or dict) of at most 5,000 characters.

Variables live in the store that this process's runs are recorded in (``TETHER_DATABASE_URL``,
else ``$TETHER_HOME/tether.db``), shared by every flow, task and process that uses it: a
task on a process pool reads the same ones. With the store switched off
(``TETHER_STORE=off``) or unreachable, each call raises a `tether.store.StoreError` that
says so. Variables are not secret: keep credentials in a ``tether.blocks.system.Secret``.
"""

from __future__ import annotations

import json as _json
import math as _math
import re as _re
from typing import Any as _Any
from typing import Generic as _Generic
from typing import TypeVar as _TypeVar

from pydantic import BaseModel as _BaseModel
from pydantic import Field as _Field

from tether._async_dispatch import in_thread as _in_thread
from tether._async_dispatch import wants_sync as _wants_sync
from tether.store import VariableTable as _VariableTable
from tether.store import values_engine as _values_engine

__all__ = ["MAX_VARIABLE_NAME_LENGTH", "MAX_VARIABLE_VALUE_LENGTH", "Variable"]

MAX_VARIABLE_NAME_LENGTH = 255
MAX_VARIABLE_VALUE_LENGTH = 5000
_NAME = _re.compile(r"[a-z0-9_-]+")

_T = _TypeVar("_T")


class Variable(_BaseModel, _Generic[_T]):
    """A named, mutable JSON value shared by the flows and tasks of a run store."""

    name: str = _Field(max_length=MAX_VARIABLE_NAME_LENGTH)
    value: _Any = None
    tags: list[str] | None = None

    # -- set ------------------------------------------------------------------------------

    @classmethod
    async def aset(
        cls, name: str, value: _Any, tags: list[str] | None = None, overwrite: bool = False
    ) -> Variable[_Any]:
        """`set`, awaitable."""
        return await _in_thread(cls.set, name, value, tags, overwrite, _sync=True)

    @classmethod
    def set(
        cls, name: str, value: _Any, tags: list[str] | None = None, overwrite: bool = False, _sync: bool | None = None
    ) -> _Any:
        """Create the variable; with ``overwrite=True`` replace its value and tags if it exists.

        Raises ValueError (`tether.store.VariableExists`) if it exists and ``overwrite`` is False,
        and ValueError for a name or value Prefect refuses."""
        if not _wants_sync(_sync):
            return cls.aset(name, value, tags, overwrite)
        _check_name(name)
        text = _check_value(name, value)
        tag_list = _check_tags(name, tags)
        _, engine = _values_engine(f"set variable {name!r}")
        stored = _VariableTable(engine).set(name, _json.loads(text), tag_list, overwrite=overwrite)
        return cls(name=stored.name, value=stored.value, tags=stored.tags)

    # -- get ------------------------------------------------------------------------------

    @classmethod
    async def aget(cls, name: str, default: _Any = None) -> _Any:
        """`get`, awaitable."""
        return await _in_thread(cls.get, name, default, _sync=True)

    @classmethod
    def get(cls, name: str, default: _Any = None, _sync: bool | None = None) -> _Any:
        """The variable's value, or ``default`` if there is no variable of that name."""
        if not _wants_sync(_sync):
            return cls.aget(name, default)
        if not isinstance(name, str):
            raise TypeError(f"Variable.get takes the variable's name as a str; got {type(name).__name__} {name!r}.")
        _, engine = _values_engine(f"read variable {name!r}")
        stored = _VariableTable(engine).get(name)
        return default if stored is None else stored.value

    # -- unset ----------------------------------------------------------------------------

    @classmethod
    async def aunset(cls, name: str) -> bool:
        """`unset`, awaitable."""
        return await _in_thread(cls.unset, name, _sync=True)

    @classmethod
    def unset(cls, name: str, _sync: bool | None = None) -> _Any:
        """Remove the variable: True if it existed, False if there was none."""
        if not _wants_sync(_sync):
            return cls.aunset(name)
        if not isinstance(name, str):
            raise TypeError(f"Variable.unset takes the variable's name as a str; got {type(name).__name__} {name!r}.")
        _, engine = _values_engine(f"unset variable {name!r}")
        return _VariableTable(engine).unset(name)


def _check_name(name: _Any) -> str:
    """``name`` if Prefect accepts it as a variable name; ValueError (TypeError for a non-str) otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"A variable's name is a str; got {type(name).__name__} {name!r}.")
    if not _NAME.fullmatch(name):
        hint = _re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_") or "my_variable"
        raise ValueError(
            f"Variable name {name!r} is not allowed: Variable name must only contain lowercase letters, numbers, "
            f"and dashes or underscores (as in Prefect). Use, for example, {hint!r}."
        )
    if len(name) > MAX_VARIABLE_NAME_LENGTH:
        raise ValueError(
            f"Variable name {name[:40]!r}... is {len(name)} characters long; a name has at most "
            f"{MAX_VARIABLE_NAME_LENGTH} (as in Prefect). Use a shorter name."
        )
    return name


def _check_value(name: str, value: _Any) -> str:
    """The value as JSON text, if Prefect accepts it; ValueError naming the variable otherwise."""
    try:
        text = _json.dumps(_finite(value), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Variable {name!r}: Variable value must be serializable to JSON ({exc}). Use a str, int, float, "
            "bool, None, or a list or dict of those (dict keys as str): for a date, store its .isoformat()."
        ) from None
    if value is not None and len(text) > MAX_VARIABLE_VALUE_LENGTH:
        raise ValueError(
            f"Variable {name!r}: Variable value must be less than {MAX_VARIABLE_VALUE_LENGTH} characters (as JSON), "
            f"and this one is {len(text)}. Keep large data in a file or a table and store its path or name instead."
        )
    return text


def _finite(value: _Any) -> _Any:
    """NaN and infinities as JSON's null, as Prefect's encoder writes them."""
    if isinstance(value, float) and not _math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _check_tags(name: str, tags: _Any) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise TypeError(f'Variable {name!r}: tags= takes a list of str, e.g. tags=["etl"]; got {tags!r}.')
    return list(tags)
