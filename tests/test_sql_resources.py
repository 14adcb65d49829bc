"""Resources against real servers: the seed's flow on MariaDB, transactions on PostgreSQL."""

from __future__ import annotations

import uuid

import pandas as pd
import pymysql
import pytest
from sqlalchemy import text

from conftest import mariadb_sessions, postgres_connections
from tether import flow, resource, task
from tether.runners import ThreadPoolRunner
from tether.sql import sql_connection, sql_engine, sql_transaction


@pytest.fixture
def seed_tables(mariadb_database):
    """The seed's two tables, in this test's own database: (database, sales, customers)."""
    sales, customers = "sales", "customers"
    conn = pymysql.connect(host="127.0.0.1", user="root", database=mariadb_database, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {customers} (CUSTOMER_ID INT PRIMARY KEY, NAME VARCHAR(40))")
        cur.execute(f"CREATE TABLE {sales} (SALE_ID INT PRIMARY KEY, CUSTOMER_ID INT, AMOUNT DECIMAL(10,2))")
        cur.executemany(f"INSERT INTO {customers} VALUES (%s, %s)", [(i, f"c{i}") for i in range(1, 11)])
        cur.executemany(f"INSERT INTO {sales} VALUES (%s, %s, %s)", [(i, i % 10 + 1, i * 1.5) for i in range(1, 101)])
    conn.close()
    return mariadb_database, sales, customers


def test_seed_flow_with_submitted_tasks_on_mariadb(seed_tables):
    database, sales_table, customers_table = seed_tables
    closed_seen = []

    # PyMySQL declares DB-API threadsafety 1: tether makes the tasks sharing it take turns.
    @resource
    def mysql(db: str):
        conn = pymysql.connect(host="127.0.0.1", user="root", database=db)
        try:
            yield conn
        finally:
            conn.close()

    using = []
    overlaps = []

    @task
    def extract(conn, table: str) -> pd.DataFrame:
        if not conn.open:
            closed_seen.append(table)
        using.append(table)
        overlaps.append(len(using))
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT * FROM {table}")
                columns = [c[0] for c in cur.description]
                return pd.DataFrame(cur.fetchall(), columns=columns)
        finally:
            using.remove(table)

    @task
    def merge_data(sales: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
        return sales.merge(customers, on="CUSTOMER_ID", how="left")

    @flow(task_runner=ThreadPoolRunner(4))
    def main_flow():
        with mysql(database) as conn:
            sales = extract.submit(conn, sales_table)
            customers = extract.submit(conn, customers_table)
        return merge_data.submit(sales, customers)

    merged = main_flow()
    assert closed_seen == []
    assert overlaps == [1, 1]  # never two tasks on the one session at once
    assert len(merged) == 100 and merged["NAME"].notna().all()
    assert mariadb_sessions(database) == 0


def test_sql_engine_pools_connections_for_parallel_tasks_and_is_disposed(seed_tables, mariadb_url):
    database, sales_table, _ = seed_tables
    url = mariadb_url.rsplit("/", 1)[0] + f"/{database}"

    @task
    def count(engine, low: int) -> int:
        frame = pd.read_sql(text(f"SELECT COUNT(*) AS n FROM {sales_table} WHERE SALE_ID > :low"), engine, params={"low": low})
        return int(frame["n"].iloc[0])

    @flow(task_runner=ThreadPoolRunner(4))
    def main():
        with sql_engine(url, pool_size=2, max_overflow=0) as engine:
            futures = [count.submit(engine, low) for low in range(0, 100, 10)]
            peak.append(mariadb_sessions(database))
        return [f.result() for f in futures]

    peak: list[int] = []
    assert main() == list(range(100, 0, -10))
    assert peak[0] <= 2  # the pool's size
    assert mariadb_sessions(database) == 0


@pytest.fixture
def pg_table(postgres_url):
    table = f"items_{uuid.uuid4().hex[:8]}"
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, label TEXT)")
    yield table
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def pg_count(table: str) -> int:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test") as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@task
def insert(conn, table: str, row_id: int) -> int:
    conn.execute(text(f"INSERT INTO {table} VALUES (:id, :label)"), {"id": row_id, "label": f"row {row_id}"})
    return row_id


@task
def broken(conn) -> None:
    raise RuntimeError("the load failed half way")


def _url_with_app(postgres_url: str, app: str) -> str:
    return f"{postgres_url}?application_name={app}"


def test_sql_transaction_commits_when_the_scope_succeeds(pg_table, postgres_url):
    app = f"tether-{uuid.uuid4().hex[:8]}"

    @flow
    def load():
        with sql_transaction(_url_with_app(postgres_url, app)) as conn:
            futures = [insert.submit(conn, pg_table, i) for i in range(5)]
        return [f.result() for f in futures]

    assert load() == [0, 1, 2, 3, 4]
    assert pg_count(pg_table) == 5
    assert postgres_connections(app) == 0


def test_sql_transaction_rolls_back_when_a_task_fails(pg_table, postgres_url):
    app = f"tether-{uuid.uuid4().hex[:8]}"

    @flow
    def load():
        with sql_transaction(_url_with_app(postgres_url, app)) as conn:
            done = [insert.submit(conn, pg_table, i) for i in range(5)]
            broken.submit(conn, wait_for=done)

    state = load(return_state=True)
    assert state.is_failed()
    assert pg_count(pg_table) == 0  # the five inserts were rolled back on the server
    assert postgres_connections(app) == 0


def test_sql_connection_commits_work_and_closes(pg_table, postgres_url):
    app = f"tether-{uuid.uuid4().hex[:8]}"

    @flow
    def load():
        with sql_connection(_url_with_app(postgres_url, app)) as conn:
            insert.submit(conn, pg_table, 1).result()
            assert postgres_connections(app) == 1
        return "ok"

    assert load() == "ok"
    assert pg_count(pg_table) == 1
    assert postgres_connections(app) == 0


def test_pandas_to_sql_through_a_transaction(pg_table, postgres_url):
    @task
    def write(conn, frame: pd.DataFrame) -> int:
        frame.to_sql(pg_table, conn, if_exists="append", index=False)
        return len(frame)

    @flow
    def load():
        with sql_transaction(postgres_url) as conn:
            return write.submit(conn, pd.DataFrame({"id": [1, 2, 3], "label": ["a", "b", "c"]})).result()

    assert load() == 3
    assert pg_count(pg_table) == 3


def test_tether_sql_exports_only_its_resources():
    import tether.sql

    assert tether.sql.__all__ == ["sql_connection", "sql_engine", "sql_transaction"]
    namespace: dict = {}
    exec("from tether.sql import *", namespace)
    assert sorted(k for k in namespace if not k.startswith("__")) == tether.sql.__all__
