"""A resource's value may be of any type, and only the value itself joins its scope.

Every test records what happened (setups, cleanups, what each task saw) and asserts
on that record; ordering between the flow body and its tasks uses events.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections import defaultdict

import pytest

from tether import CleanupError, ResourceClosedError, flow, resource, task, task_input_hash
from tether.runners import InlineRunner, ThreadPoolRunner

RUNNERS = [pytest.param(lambda: ThreadPoolRunner(4), id="threads"), pytest.param(InlineRunner, id="inline")]

VALUES = [
    pytest.param(lambda: {"open": True}, id="dict"),
    pytest.param(lambda: ["open"], id="list"),
    pytest.param(lambda: ("schema", "open"), id="tuple"),
    pytest.param(lambda: "tmp_table_7", id="str"),
    pytest.param(lambda: 12345678, id="int"),
    pytest.param(lambda: 2.5, id="float"),
    pytest.param(lambda: b"handle", id="bytes"),
]


def recording_resource(make_value, log: list[str]):
    @resource
    def res():
        value = make_value()
        log.append("setup")
        try:
            yield value
            log.append("cleanup:ok")
        except BaseException as exc:
            log.append(f"cleanup:{type(exc).__name__}")
            raise

    return res


@task
def seen(value, log: list[str], label: str, gate: threading.Event | None = None):
    if gate is not None:
        gate.wait(10)
    log.append(f"task:{label}")
    return value


@pytest.mark.parametrize("make_value", VALUES)
def test_a_value_of_any_type_keeps_its_scope_open_for_a_task_submitted_after_the_block(make_value):
    """(Threads only: on the inline runner the block's task is over when the block ends.)"""
    log: list[str] = []
    res = recording_resource(make_value, log)
    gate = threading.Event()

    @flow(task_runner=ThreadPoolRunner(4))
    def main():
        with res() as value:
            first = seen.submit(value, log, "inside", gate)
        later = seen.submit(value, log, "after-block")  # a member: it received the value
        gate.set()
        return first.result(), later.result()

    inside, later = main()
    assert inside == make_value() and later == make_value()
    assert log.count("setup") == 1 and log.count("cleanup:ok") == 1
    assert log.index("cleanup:ok") > log.index("task:after-block")


@pytest.mark.parametrize("make_value", VALUES)
def test_a_value_used_after_cleanup_raises_resource_closed(make_value):
    log: list[str] = []
    res = recording_resource(make_value, log)

    @flow
    def main():
        with res() as value:
            pass  # nothing used the value: its cleanup is due when the block ends
        return value

    value = main()
    assert log == ["setup", "cleanup:ok"]

    @flow
    def later():
        return seen.submit(value, log, "late").result()

    with pytest.raises(ResourceClosedError, match="already cleaned up"):
        later()
    assert "task:late" not in log


@pytest.mark.parametrize("literal", ["public", 12345678, ("a", "b")], ids=["str", "int", "tuple"])
def test_an_equal_value_that_did_not_come_from_the_resource_never_joins_its_scope(literal):
    log: list[str] = []

    @resource
    def named():
        log.append("setup")
        yield literal
        log.append("cleanup:ok")

    @task
    def echo(x):
        return x

    @flow
    def main():
        with named() as value:
            assert value == literal
            inside = echo.submit(value).result()
        # The same literal, typed again after the cleanup: it is not the resource's value.
        return inside, echo.submit("public").result(), echo.submit(12345678).result(), echo.submit(("a", "b")).result()

    assert main() == (literal, "public", 12345678, ("a", "b"))
    assert log == ["setup", "cleanup:ok"]


def test_a_value_returned_from_a_subflow_is_closed_when_the_parent_uses_it():
    log: list[str] = []
    res = recording_resource(lambda: {"conn": "open"}, log)

    @flow
    def child():
        with res() as value:
            pass
        return value

    @flow
    def parent():
        value = child()
        assert log == ["setup", "cleanup:ok"]
        return seen.submit(value, log, "parent")

    with pytest.raises(ResourceClosedError, match="already cleaned up"):
        parent()
    assert "task:parent" not in log


kept: dict[str, object] = {}


def test_a_value_kept_in_a_global_is_closed_in_a_later_flow_run():
    log: list[str] = []
    res = recording_resource(lambda: ["connection"], log)

    @flow
    def first():
        with res() as value:
            kept["value"] = value

    @flow
    def second():
        return seen.submit(kept["value"], log, "second").result()

    first()
    with pytest.raises(ResourceClosedError, match="already cleaned up"):
        second()
    kept.clear()


def test_a_closed_value_that_is_gone_is_forgotten():
    log: list[str] = []

    class Handle:
        pass

    res = recording_resource(Handle, log)

    @flow
    def main():
        with res():
            pass

    from tether._resources import values

    before = len(values())
    main()
    assert len(values()) == before  # Handle was weakly kept: collected, and forgotten


@pytest.mark.parametrize("make_runner", RUNNERS)
def test_none_is_a_value_like_any_other(make_runner):
    log: list[str] = []
    res = recording_resource(lambda: None, log)

    @flow(task_runner=make_runner())
    def main():
        with res() as value:
            assert value is None
            inside = seen.submit(value, log, "inside")
        return inside.result()

    assert main() is None
    assert log == ["setup", "task:inside", "cleanup:ok"]


@dataclasses.dataclass
class Settings:
    conn: object
    retries: int = 3


def test_a_value_inside_a_dataclass_or_a_defaultdict_joins_the_scope():
    log: list[str] = []
    res = recording_resource(lambda: {"open": True}, log)
    gate = threading.Event()

    @task
    def read(settings: Settings, extra: defaultdict, gate=None):
        if gate is not None:
            gate.wait(10)
        log.append("task")
        return settings.conn["open"], extra["conns"][0]["open"]

    @flow(task_runner=ThreadPoolRunner(4))
    def main():
        with res() as conn:
            first = seen.submit(conn, log, "inside", gate)
        extra = defaultdict(list)
        extra["conns"].append(conn)
        later = read.submit(Settings(conn), extra)  # after the block: joins through the dataclass
        gate.set()
        first.result()
        return later.result()

    assert main() == (True, True)
    assert log.index("cleanup:ok") > log.index("task")


def test_a_defaultdict_argument_with_task_input_hash():
    calls = []

    @task(cache_key_fn=task_input_hash)
    def count(groups: defaultdict) -> int:
        calls.append(1)
        return sum(len(v) for v in groups.values())

    @flow
    def main():
        groups = defaultdict(list)
        groups["a"].extend([1, 2])
        return count(groups), count(groups)

    assert main() == (2, 2)
    assert calls == [1]


def sqlite_resource(log: list[str], **connect_options):
    """A transaction on a SQLite file that logs the thread of its setup and its commit."""

    @resource
    def sqlite(path):
        conn = sqlite3.connect(path, **connect_options)
        log.append(f"setup:{threading.get_ident()}")
        try:
            yield conn
            conn.commit()
            log.append(f"commit:{threading.get_ident()}")
        finally:
            conn.close()

    return sqlite


@task
def insert(conn, n):
    conn.execute("INSERT INTO t VALUES (?)", (n,))


def rows(path) -> list[tuple[int]]:
    with sqlite3.connect(path) as check:
        return check.execute("SELECT n FROM t ORDER BY n").fetchall()


def test_a_default_sqlite3_connection_is_cleaned_up_on_the_thread_that_made_it(tmp_path):
    path = tmp_path / "thread-bound.db"
    log: list[str] = []
    sqlite = sqlite_resource(log)  # check_same_thread=True: no other thread may touch it

    @flow
    def main():
        with sqlite(path) as conn:
            conn.execute("CREATE TABLE t (n INTEGER)")
            insert(conn, 1)  # called tasks run on the flow's thread
            insert(conn, 2)

    @flow
    def empty():
        with sqlite(path):
            pass

    main()
    empty()
    thread = threading.get_ident()
    assert log == [f"setup:{thread}", f"commit:{thread}", f"setup:{thread}", f"commit:{thread}"]
    assert rows(path) == [(1,), (2,)]


def test_a_sqlite3_connection_shared_across_threads_is_cleaned_up_as_usual(tmp_path):
    path = tmp_path / "shared.db"
    log: list[str] = []
    sqlite = sqlite_resource(log, check_same_thread=False)

    @flow
    def main():
        with sqlite(path) as conn:
            conn.execute("CREATE TABLE t (n INTEGER)")
            insert.submit(conn, 1).result()  # on a worker thread: allowed for this connection

    main()
    assert [step.split(":")[0] for step in log] == ["setup", "commit"]
    assert rows(path) == [(1,)]


def test_a_generator_that_yields_twice_is_closed_and_fails_the_flow():
    log: list[str] = []

    @resource
    def twice():
        try:
            yield "first"
            yield "second"
        finally:
            log.append("finally")

    @flow
    def main():
        with twice():
            pass

    with pytest.raises(CleanupError, match="yielded a second time"):
        main()
    assert log == ["finally"]
