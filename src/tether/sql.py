"""SQL resources on SQLAlchemy 2: an engine, a connection, a transaction.

Pooling is SQLAlchemy's. A connection and a transaction are one database
session each, which is not safe to use from two task runs at once, so they
carry ``max_concurrency=1``: tasks sharing one take turns. Tasks that should
run in parallel share `sql_engine` instead and take a pooled connection each
(``with engine.connect() as conn``, or pandas ``read_sql(query, engine)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, create_engine

from tether._resources import resource

__all__ = ["sql_connection", "sql_engine", "sql_transaction"]


@resource(name="sql_engine")
def sql_engine(url: str, **engine_kwargs: Any) -> Iterator[Engine]:
    """A SQLAlchemy `Engine` (with its connection pool), disposed at cleanup."""
    engine = create_engine(url, **engine_kwargs)
    try:
        yield engine
    finally:
        engine.dispose()


@resource(name="sql_connection", max_concurrency=1)
def sql_connection(url: str, **engine_kwargs: Any) -> Iterator[Connection]:
    """One `Connection`; work not committed by the tasks is committed if the scope succeeded."""
    engine = create_engine(url, **engine_kwargs)
    try:
        with engine.connect() as connection:
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()
    finally:
        engine.dispose()


@resource(name="sql_transaction", max_concurrency=1)
def sql_transaction(url: str, **engine_kwargs: Any) -> Iterator[Connection]:
    """A `Connection` inside one transaction: committed if the scope succeeded, else rolled back."""
    engine = create_engine(url, **engine_kwargs)
    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            try:
                yield connection
            except BaseException:
                transaction.rollback()
                raise
            transaction.commit()
    finally:
        engine.dispose()


__all__ = ["sql_connection", "sql_engine", "sql_transaction"]
