"""Shared fixtures: every test gets its own TETHER_HOME and must not leak threads."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator

import pytest

from tether.runners import InlineRunner, ThreadPoolRunner
from tether.testing import FakeClock, RecordingStore, fresh_runtime


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test gets its own TETHER_HOME, its own tether runtime (nothing a test left in the
    process's limiter, result cache, store... is seen by the next), and no run store unless it
    asks for one (a store costs ~60 ms to create; the store's own tests turn it back on)."""
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "tether-home"))
    monkeypatch.setenv("TETHER_STORE", "off")
    monkeypatch.delenv("TETHER_DATABASE_URL", raising=False)
    with fresh_runtime():
        yield


@pytest.fixture(params=[pytest.param(ThreadPoolRunner, id="threads"), pytest.param(InlineRunner, id="inline")])
def runner(request):
    """A fresh runner of each local kind: tests taking it run on both."""
    return request.param()


@pytest.fixture
def clock():
    """The test's runtime on a `FakeClock`: time moves only when the test moves it."""
    with FakeClock() as fake:
        yield fake


@pytest.fixture
def recorder():
    """Every event of the test, in order."""
    with RecordingStore() as store:
        yield store


_reported_leaks: set[threading.Thread] = set()


@pytest.fixture(autouse=True)
def _no_leaked_threads():
    """Fail a test that leaves tether cleanup threads or busy worker threads running.

    Idle pool threads end when their runner stops; a thread abandoned on purpose (a
    test of a task blocked in C) is reported once, by the test that left it.
    """
    yield
    leaked = []
    for thread in threading.enumerate():
        if thread in _reported_leaks or not thread.name.startswith("tether-cleanup"):
            continue
        thread.join(timeout=5)
        if thread.is_alive():
            _reported_leaks.add(thread)
            leaked.append(thread.name)
    assert not leaked, f"threads left running: {leaked}"


# -- real services on loopback -------------------------------------------------------

_HOW_TO_START = {
    "MariaDB": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
}


def _service_missing(name: str, error: Exception) -> None:
    import os

    message = f"{name} is not reachable on 127.0.0.1 ({error}); start it with: {_HOW_TO_START[name]}"
    if os.environ.get("TETHER_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (TETHER_REQUIRE_SERVICES=1, so this fails instead of skipping)")
    pytest.skip(message)


MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def mariadb_url() -> str:
    """The URL of the test MariaDB; skips (or fails under TETHER_REQUIRE_SERVICES=1) if it is down."""
    try:
        import pymysql

        pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means the service is missing
        _service_missing("MariaDB", exc)
    return MARIADB_URL


@pytest.fixture
def postgres_url() -> str:
    try:
        import psycopg

        psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001
        _service_missing("PostgreSQL", exc)
    return POSTGRES_URL


@contextlib.contextmanager
def own_postgres_database(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database of the test's own (a unique name; NOTIFY is per database, so only
    this test's writes notify it), dropped at the end; yields its URL."""
    import sqlalchemy as sa

    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            yield sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        admin.dispose()


@pytest.fixture
def postgres_database(postgres_url) -> Iterator[str]:
    """`own_postgres_database` as a fixture."""
    with own_postgres_database(postgres_url) as url:
        yield url


@pytest.fixture
def postgres_store_url(postgres_url) -> Iterator[str]:
    """A PostgreSQL run store of this test's own: a schema made for it (dropped afterwards),
    so tether's tables never land in a database's own schema."""
    import sqlalchemy as sa

    schema = f"tether_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty store: a SQLite file, or a PostgreSQL schema of this test's own (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'tether.db'}"
        return
    yield request.getfixturevalue("postgres_store_url")


@pytest.fixture
def mariadb_database(mariadb_url) -> Iterator[str]:
    """A MariaDB database of this test's own (a unique name), dropped at the end.

    Tests never touch a database they did not create; counting the connections to this
    one (`mariadb_sessions`) counts this test's connections and no other client's."""
    import uuid

    import pymysql

    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def create_seed_tables(database: str, sales: int = 50) -> None:
    """The seed's ``customers`` (5) and ``sales`` tables, in ``database`` (a test's own)."""
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", user="root", database=database, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE customers (CUSTOMER_ID INT PRIMARY KEY, NAME VARCHAR(40))")
            cur.execute("CREATE TABLE sales (SALE_ID INT PRIMARY KEY, CUSTOMER_ID INT, AMOUNT INT)")
            cur.executemany("INSERT INTO customers VALUES (%s, %s)", [(i, f"c{i}") for i in range(1, 6)])
            cur.executemany("INSERT INTO sales VALUES (%s, %s, %s)", [(i, i % 5 + 1, i) for i in range(1, sales + 1)])
    finally:
        conn.close()


def mariadb_sessions(database: str) -> int:
    """Connections the MariaDB server has open to ``database`` (a test's own) right now."""
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root")  # to no database: not counted
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (database,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def postgres_connections(application_name: str | None = None) -> int:
    """Client backends on the PostgreSQL server (optionally with one application_name)."""
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres") as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        params: tuple = ()
        if application_name is not None:
            query += " AND application_name = %s"
            params = (application_name,)
        return int(conn.execute(query, params).fetchone()[0])
