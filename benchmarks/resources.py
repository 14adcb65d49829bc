"""Resources against the usual workaround (issue 3's figure), on the local MariaDB.

    python benchmarks/resources.py [--tasks 200] [--url mysql+pymysql://root@127.0.0.1:3306/test]

200 tasks each run a query. tether: one `@resource(max_concurrency=4)` SQLAlchemy engine
shared by all of them. Workaround (Prefect's advice): each task opens its own
connection. Prints the server connections each opened (delta of
SHOW GLOBAL STATUS LIKE 'Connections') and the wall-time ratio.
Goal: <= 4 connections against 200, and >= 3x faster.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import pymysql
from sqlalchemy import create_engine, text

os.environ.setdefault("TETHER_HOME", tempfile.mkdtemp(prefix="tether-bench-"))  # never the user's run store

from tether import flow, resource, task  # noqa: E402 - after TETHER_HOME is set
from tether.runners import ThreadPoolRunner

QUERY = "SELECT COUNT(*) FROM information_schema.COLLATIONS WHERE ID > %s"


def server_connections() -> int:
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
            return int(cur.fetchone()[1])
    finally:
        conn.close()


@resource(max_concurrency=4)
def mariadb(url: str):
    engine = create_engine(url, pool_size=4, max_overflow=0)
    try:
        yield engine
    finally:
        engine.dispose()


@task
def query_through_resource(engine, i: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(QUERY.replace("%s", ":i")), {"i": i}).scalar_one())


@task
def query_with_own_connection(i: int) -> int:
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test")
    try:
        with conn.cursor() as cur:
            cur.execute(QUERY, (i,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


@flow(task_runner=ThreadPoolRunner(8))
def with_resource(url: str, n: int) -> list[int]:
    with mariadb(url) as engine:
        futures = [query_through_resource.submit(engine, i) for i in range(n)]
    return [f.result() for f in futures]



@flow(task_runner=ThreadPoolRunner(8))
def workaround(n: int) -> list[int]:
    futures = [query_with_own_connection.submit(i) for i in range(n)]
    return [f.result() for f in futures]


def measure(fn, *args) -> tuple[float, int, list[int]]:
    before = server_connections()
    start = time.perf_counter()
    result = fn(*args)
    elapsed = time.perf_counter() - start
    return elapsed, server_connections() - before - 1, result  # -1: server_connections' own


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--url", default="mysql+pymysql://root@127.0.0.1:3306/test")
    args = parser.parse_args()
    with_resource(args.url, 10), workaround(10)  # warm up imports and threads
    ours_t, ours_c, ours = min((measure(with_resource, args.url, args.tasks) for _ in range(3)), key=lambda m: m[0])
    theirs_t, theirs_c, theirs = min((measure(workaround, args.tasks) for _ in range(3)), key=lambda m: m[0])
    assert ours == theirs
    print(f"{args.tasks} tasks, one query each, on MariaDB:")
    print(f"  @resource(max_concurrency=4) engine: {ours_t:.3f} s, {ours_c} server connections (goal <= 4)")
    print(f"  a connection per task:                {theirs_t:.3f} s, {theirs_c} server connections")
    print(f"  speed-up {theirs_t / ours_t:.1f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
