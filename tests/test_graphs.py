"""Prefect 1 graphs: `with Flow(...)`, `flow.run()`, and `@resource_manager` as graph nodes."""

from __future__ import annotations

import threading

import pandas as pd
import pymysql
import pytest

from conftest import mariadb_sessions
from tether import Flow, Parameter, UsageError, resource_manager, task, unmapped


def make_manager(log, fail_init=False, fail_setup=False, fail_cleanup=False):
    @resource_manager
    class Managed:
        def __init__(self, name="db"):
            if fail_init:
                raise RuntimeError("init failed")
            self.name = name

        def setup(self):
            if fail_setup:
                raise RuntimeError("setup failed")
            log.append("setup")
            return f"conn:{self.name}"

        def cleanup(self, conn, error=None):
            log.append(("cleanup", conn, type(error).__name__ if error else None))
            if fail_cleanup:
                raise RuntimeError("cleanup failed")

    return Managed


@task
def use(conn, label):
    return f"{label}@{conn}"


@task
def boom(conn):
    raise ValueError("block node failed")


@task
def after(values):
    return len(values)


def build(manager, failing_node=False):
    with Flow("table") as flow:
        with manager("db") as conn:
            a = use(conn, "a")
            b = boom(conn) if failing_node else use(conn, "b")
        total = after([a, b])
    return flow, conn, a, b, total


def test_row_init_fails():
    log = []
    flow, conn, a, b, total = build(make_manager(log, fail_init=True))
    state = flow.run()
    assert state.is_failed()
    assert state.result[conn].is_failed()
    assert state.result[a].is_failed() and state.result[b].is_failed()
    cleanup = next(n for n in flow.nodes if n.kind == "cleanup")
    assert state.result[cleanup].is_skipped()
    assert log == []


def test_row_setup_fails():
    log = []
    flow, conn, a, b, total = build(make_manager(log, fail_setup=True))
    state = flow.run()
    assert state.is_failed()
    assert state.result[conn].is_failed() and "setup failed" in state.result[conn].message
    assert state.result[a].is_failed() and "did not run" in state.result[a].message
    cleanup = next(n for n in flow.nodes if n.kind == "cleanup")
    assert state.result[cleanup].is_skipped()
    assert log == []


def test_row_a_block_node_fails():
    log = []
    flow, conn, a, b, total = build(make_manager(log), failing_node=True)
    state = flow.run()
    assert state.is_failed()
    assert state.result[conn].is_successful()
    assert state.result[a].is_successful() and state.result[b].is_failed()
    cleanup = next(n for n in flow.nodes if n.kind == "cleanup")
    assert state.result[cleanup].is_successful()
    assert log[-1] == ("cleanup", "conn:db", "ValueError")


def test_row_cleanup_fails():
    log = []
    flow, conn, a, b, total = build(make_manager(log, fail_cleanup=True))
    state = flow.run()
    assert state.is_successful()
    cleanup = next(n for n in flow.nodes if n.kind == "cleanup")
    assert state.result[cleanup].is_failed() and "cleanup failed" in state.result[cleanup].message
    assert state.result[total].result == 2


def test_nodes_after_the_block_do_not_wait_for_cleanup():
    log = []
    release = threading.Event()
    seen_cleanups = []

    @resource_manager
    class Slow:
        def setup(self):
            return "slow"

        def cleanup(self, conn):
            assert release.wait(10)
            log.append("cleanup")

    @task
    def independent():
        seen_cleanups.append(list(log))
        release.set()
        return "ran"

    @task
    def quick(conn):
        return conn

    with Flow("after") as flow:
        with Slow() as conn:
            quick(conn)
        later = independent()
    state = flow.run()
    assert state.is_successful()
    assert state.result[later].result == "ran"
    assert seen_cleanups == [[]]  # it ran while cleanup was still waiting
    assert log == ["cleanup"]


def test_parameters_upstream_tasks_and_map():
    order = []

    @task
    def first():
        order.append("first")

    @task
    def second():
        order.append("second")

    @task
    def double(x, factor):
        return x * factor

    @task
    def numbers(n):
        return list(range(n))

    with Flow("params") as flow:
        n = Parameter("n", default=3)
        f = first()
        s = second(upstream_tasks=[f])
        doubled = double.map(numbers(n), unmapped(10))
    state = flow.run(parameters={"n": 4})
    assert state.is_successful()
    assert order == ["first", "second"]
    assert state.result[doubled].result == [0, 10, 20, 30]
    assert state.result[s].is_successful()
    assert flow.run().result[doubled].result == [0, 10, 20]


def test_errors_mixing_flows_and_cycles():
    with Flow("one"):
        node = use("conn", "x")
    with pytest.raises(UsageError, match="belongs to Flow 'one' and cannot be used in Flow 'two'"), Flow("two"):
        use(node, "y")

    with Flow("cycle") as flow:
        a = use("c", "a")
        b = use(a, "b")
    flow.set_dependencies(a, upstream_tasks=[b])
    with pytest.raises(UsageError, match="has a cycle"):
        flow.run()

    with Flow("no-params") as plain:
        use("c", "a")
    with pytest.raises(UsageError, match="has no parameter"):
        plain.run(parameters={"nope": 1})


def test_seed_prefect1_example_against_mariadb(mariadb_database):
    conn = pymysql.connect(host="127.0.0.1", user="root", database=mariadb_database, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE p1_sales (CUSTOMER_ID INT, AMOUNT INT)")
        cur.execute("CREATE TABLE p1_customers (CUSTOMER_ID INT, NAME VARCHAR(20))")
        cur.executemany("INSERT INTO p1_sales VALUES (%s, %s)", [(1, 10), (2, 20), (1, 5)])
        cur.executemany("INSERT INTO p1_customers VALUES (%s, %s)", [(1, "ann"), (2, "bob")])

    @resource_manager
    class MySQLConnection:
        def __init__(self, database: str = "DB_NAME"):
            self.database = database

        def setup(self):
            return pymysql.connect(host="127.0.0.1", user="root", database=self.database)

        @staticmethod
        def cleanup(conn):
            conn.close()

    @task
    def extract_sales_from_db(conn) -> pd.DataFrame:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM p1_sales")
            return pd.DataFrame(cur.fetchall(), columns=["CUSTOMER_ID", "AMOUNT"])

    @task
    def extract_customers_from_db(conn) -> pd.DataFrame:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM p1_customers")
            return pd.DataFrame(cur.fetchall(), columns=["CUSTOMER_ID", "NAME"])

    @task
    def merge_data(sales: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
        return sales.merge(customers, on="CUSTOMER_ID", how="left")

    @task
    def load_to_snowflake_dwh(data: pd.DataFrame):
        return len(data)

    with Flow("resource_manager_example") as flow:
        with MySQLConnection(mariadb_database) as db:
            sales = extract_sales_from_db(db)
            customers = extract_customers_from_db(db)
        df = merge_data(sales, customers)
        loaded = load_to_snowflake_dwh(df)
    state = flow.run()
    assert state.is_successful()
    assert sorted(state.result[df].result["NAME"]) == ["ann", "ann", "bob"]
    assert state.result[loaded].result == 3
    conn.close()
    assert mariadb_sessions(mariadb_database) == 0


# -- Prefect 1's task operators --------------------------------------------------------


@task
def number(x):
    return x


@task
def no_number(x):
    raise RuntimeError("no number today")


def test_operators_on_nodes_add_nodes_that_apply_them():
    with Flow("operators") as flow:
        n = Parameter("n", default=3)
        a = number(n)
        total = a * 2 + 1  # 7
        reflected = 10 - a  # 7
        ratio = a / 2
        floor = 7 // a
        power = a ** 2
        remainder = 10 % a
        bigger = total > 5
        smaller_or_same = a <= 2
        item = number([10, 20, 30])[1]
        same = a.is_equal(3)
        different = a.is_not_equal(3)
        negated = same.not_()
        both = bigger & same
        either = smaller_or_same | same
    state = flow.run(parameters={"n": 3})
    assert state.is_successful()
    got = {node: state.result[node].result for node in
           (total, reflected, ratio, floor, power, remainder, bigger, smaller_or_same, item, same, different, negated, both, either)}
    assert list(got.values()) == [7, 7, 1.5, 2, 9, 1, True, False, 20, True, False, False, True, True]
    # Named as in Prefect 1, so a reader of the results sees which operator each node is.
    assert [node.name for node in (total, reflected, item, bigger, same)] == ["Add", "Sub", "GetItem", "GreaterThan", "Equal"]
    # `==` stays identity: a node is the key of its result.
    assert (a == a) is True and (a == total) is False
    assert state.result[a].result == 3


def test_an_operator_node_after_a_failed_node_does_not_run():
    with Flow("operators-fail") as flow:
        bad = no_number(1)
        plus = bad + 1
    state = flow.run()
    assert state.is_failed()
    assert state.result[bad].is_failed()
    assert not state.result[plus].is_successful()


def test_an_operator_outside_its_flow_block_says_where_to_use_it():
    with Flow("built") as flow:
        a = number(1)
    with pytest.raises(UsageError, match=r"Add of node 'number' was used outside the 'with Flow\('built'\)' block"):
        a + 1
    assert len(flow.nodes) == 1
