"""Bring a store's schema to this code's revision, or explain why it cannot be used.

The common case (the schema is current) costs one query and does not import
Alembic. Otherwise the upgrade runs in one write transaction that first takes
the store's lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock), so
processes starting together on a new store migrate it exactly once.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import DatabaseError, OperationalError

from tether.store._db import make_engine, write
from tether.store._errors import StoreError, StoreSchemaError
from tether.store._location import StoreLocation
from tether.store._redact import redact_text
from tether.store._schema import HEAD, REVISIONS, metadata

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = 0x7E7E_0001  # any constant; the same in every tether process

_version_metadata = sa.MetaData()
_alembic_version = sa.Table(
    "alembic_version",
    _version_metadata,
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def open_engine(url: str | sa.URL | None = None) -> tuple[StoreLocation, sa.Engine]:
    """Find the store, connect, and bring its schema up to date; raises `StoreError` if it cannot be used."""
    location = StoreLocation.resolve(url)
    engine = make_engine(location)
    try:
        ensure_schema(engine, location)
    except BaseException:
        engine.dispose()
        raise
    return location, engine


def current_revision(conn: sa.Connection) -> str | None:
    """The schema revision recorded in the store, or None for an empty database."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def ensure_schema(engine: sa.Engine, location: StoreLocation) -> None:
    """Upgrade the store to `HEAD` if it is older; raise `StoreError` if it cannot be used."""
    try:
        with engine.connect() as conn:
            revision = current_revision(conn)
        if revision == HEAD:
            return
        _check_known(revision, location)
        write(engine, lambda conn: _upgrade(conn, location))
    except StoreError:
        raise
    except (DatabaseError, OperationalError) as exc:
        raise unusable(location, exc) from None


def _check_known(revision: str | None, location: StoreLocation) -> None:
    if revision is not None and revision not in REVISIONS:
        raise StoreSchemaError(
            f"The run store at {location.shown} has schema revision {revision!r}, which this version of "
            f"tether does not know (it knows up to {HEAD!r}): a newer tether wrote it. Upgrade tether "
            "(pip install -U tether), or point TETHER_HOME or TETHER_DATABASE_URL at another store."
        )


def _upgrade(conn: sa.Connection, location: StoreLocation) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
    revision = current_revision(conn)  # again, under the lock: another process may have done it
    if revision == HEAD:
        return
    _check_known(revision, location)
    if revision is None and _has_foreign_tables(conn):
        raise StoreSchemaError(
            f"The database at {location.shown} already has tables named like tether's "
            f"({', '.join(_has_foreign_tables(conn))}) but no tether schema revision, so tether will not "
            "touch it. Point TETHER_DATABASE_URL at an empty database (or schema) for tether."
        )
    if revision is None:
        # A new store: create the tables as they are now and record the revision, as Alembic's
        # "create_all, then stamp head" recipe does (a test checks this equals the migrations).
        metadata.create_all(conn)
        _version_metadata.create_all(conn)
        conn.execute(_alembic_version.insert().values(version_num=HEAD))
        return
    run_migrations(conn, HEAD)


def run_migrations(conn: sa.Connection, revision: str) -> None:
    """Run Alembic's migrations on ``conn`` (in its transaction) up to ``revision``."""
    # Imported here: Alembic is needed only when an existing schema changes, and costs ~0.1 s to import.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


def _has_foreign_tables(conn: sa.Connection) -> list[str]:
    existing = set(sa.inspect(conn).get_table_names())
    return sorted(existing & set(metadata.tables))


def unusable(location: StoreLocation, exc: BaseException) -> StoreError:
    """The error for a store that fails when opened: a corrupt file, a server that does not answer."""
    reason = redact_text(f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}".splitlines()[0])
    if location.is_sqlite:
        if "not a database" in reason or "malformed" in reason or "corrupt" in reason:
            return StoreError(
                f"The run store {location.path} is not a readable SQLite database ({reason}): the file is "
                f"corrupt or is not tether's. Move it aside (mv {location.path} {location.path}.bad) and "
                "tether will start a new store, or set TETHER_HOME to another directory."
            )
        return StoreError(
            f"The run store {location.path} cannot be used ({reason}). Check that the file and its "
            "directory are writable and the disk is not full, or set TETHER_HOME to another directory."
        )
    return StoreError(
        f"The run store at {location.shown} cannot be used ({reason}). Check that the database server is "
        "running and the URL in TETHER_DATABASE_URL is right, or unset it to use SQLite under $TETHER_HOME."
    )
