"""Variables in the run store, and which store this process's variables, secrets and artifacts use.

`VariableTable` keeps Prefect's variables: named JSON values shared by every run of a
store, created once (``overwrite`` replaces the value), read and removed by name. Names
and values are checked by the caller (`tether.variables`); the table stores JSON text.

`values_engine` answers where they live for the calling process: the store this process
records to (a flow's), else the one the environment names (``TETHER_DATABASE_URL``, else
``$TETHER_HOME/tether.db``), opened once per process and URL. A worker process of a
process pool inherits the flow's environment, so it reaches the flow's store the same
way. With ``TETHER_STORE=off``, or a store that cannot be opened, it raises a
`StoreError` that says which and how to fix it.

This module reads and writes rows; it does not validate Prefect's rules or encrypt.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from tether._errors import StoreError, StoreOff, VariableExists
from tether.store._active import active_store, recording_disabled
from tether.store._db import read, write
from tether.store._location import StoreLocation
from tether.store._migrate import open_engine, unusable
from tether.store._schema import variables


@dataclass(frozen=True)
class StoredVariable:
    name: str
    value: Any
    tags: list[str]
    created: float
    updated: float


class VariableTable:
    """The variables of one store (``Store.engine``, or `values_engine`'s)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def get(self, name: str) -> StoredVariable | None:
        row = read(self.engine, lambda conn: conn.execute(sa.select(variables).where(variables.c.name == name)).first())
        return None if row is None else _variable(row._mapping)

    def all(self) -> list[StoredVariable]:
        """Every variable, by name."""
        rows = read(self.engine, lambda conn: conn.execute(sa.select(variables).order_by(variables.c.name)).all())
        return [_variable(r._mapping) for r in rows]

    def set(self, name: str, value: Any, tags: list[str] | None = None, overwrite: bool = False) -> StoredVariable:
        """Create the variable, or replace its value and tags with ``overwrite``; `VariableExists` otherwise.

        ``value`` must be JSON-able (the caller checked it)."""
        text, tag_text = json.dumps(value), json.dumps(list(tags or []))

        def work(conn: sa.Connection) -> StoredVariable:
            now = time.time()
            row = conn.execute(sa.select(variables).where(variables.c.name == name)).first()
            if row is None:
                conn.execute(
                    sa.insert(variables).values(name=name, value=text, tags=tag_text, created=now, updated=now)
                )
                return StoredVariable(name, json.loads(text), json.loads(tag_text), now, now)
            if not overwrite:
                raise VariableExists(_exists_message(name))
            conn.execute(
                sa.update(variables).where(variables.c.name == name).values(value=text, tags=tag_text, updated=now)
            )
            return StoredVariable(name, json.loads(text), json.loads(tag_text), row._mapping["created"], now)

        try:
            return write(self.engine, work)
        except IntegrityError:
            # Another process created it between our read and our insert (PostgreSQL: nothing to lock yet).
            if not overwrite:
                raise VariableExists(_exists_message(name)) from None
            return write(self.engine, work)

    def unset(self, name: str) -> bool:
        """Remove the variable; False if there was none."""
        return write(
            self.engine, lambda conn: conn.execute(sa.delete(variables).where(variables.c.name == name)).rowcount == 1
        )


def _exists_message(name: str) -> str:
    return (
        f"Variable {name!r} already exists, so it was not changed: Variable.set does not replace a value "
        f"unless told to. Pass overwrite=True to replace it (Variable.set({name!r}, value, overwrite=True)), "
        f"or remove it first with Variable.unset({name!r})."
    )


def _variable(row: Any) -> StoredVariable:
    return StoredVariable(
        row["name"], json.loads(row["value"]), json.loads(row["tags"] or "[]"), row["created"], row["updated"]
    )


# -- which store --------------------------------------------------------------------------

_engines: OrderedDict[sa.URL, tuple[StoreLocation, sa.Engine]] = OrderedDict()
_engines_lock = threading.Lock()
#: Stores opened here besides the recording one (tests switch TETHER_HOME often): the oldest is closed.
_KEEP_ENGINES = 4


def values_engine(what: str) -> tuple[StoreLocation, sa.Engine]:
    """The store for variables, secrets and artifacts in this process, and its location.

    ``what`` says what needs it ("read variable 'answer'"), for the error: `StoreOff` when
    ``TETHER_STORE=off``, `StoreError` when the store cannot be opened."""
    if recording_disabled():
        raise StoreOff(
            f"Cannot {what}: it lives in the run store, and the store is switched off here "
            f"(TETHER_STORE={os.environ.get('TETHER_STORE', '')!r}). Unset TETHER_STORE (or set it to on) to use "
            f"the store at {StoreLocation.resolve().shown}."
        )
    active = active_store()
    if active is not None:
        return active.location, active.engine
    location = StoreLocation.resolve()
    found = _engines.get(location.url)
    if found is not None:
        return found
    with _engines_lock:
        found = _engines.get(location.url)
        if found is not None:
            return found
        try:
            found = open_engine(location.url)
        except StoreError as exc:
            raise StoreError(f"Cannot {what}: {exc}") from None
        except SQLAlchemyError as exc:  # a driver error that open_engine did not word
            raise StoreError(f"Cannot {what}: {unusable(location, exc)}") from None
        _engines[location.url] = found
        while len(_engines) > _KEEP_ENGINES:
            _engines.popitem(last=False)[1][1].dispose()
        return found


def close_engines() -> None:
    """Close the stores `values_engine` opened (not the recording one): for tests and tools that
    switch stores and must leave no connection behind."""
    with _engines_lock:
        found = list(_engines.values())
        _engines.clear()
    for _, engine in found:
        engine.dispose()


def _forget_in_child() -> None:
    global _engines_lock
    _engines_lock = threading.Lock()
    for _, engine in _engines.values():
        engine.dispose(close=False)  # the parent's connections are the parent's
    _engines.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
