"""One cell of the fault matrix: a flow whose resource is a real MariaDB connection, one fault.

    python fault_cell.py FAULT RUNNER RECORD_FILE

The flow opens ``connection`` (PyMySQL, root@127.0.0.1:3306/test) and submits two tasks
that use it. On a remote runner each task waits until both are running, so its two
workers open two copies; on threads the two tasks share the one connection and take
turns (see `together`). Then FAULT happens (see `FAULTS`), by itself or sent by the test.

Every step is one line appended to RECORD_FILE with one ``write`` on an ``O_APPEND``
descriptor, so the lines of several processes never mix and come in the order they
happened. Each line is ``KIND PID CONN_ID [EXTRA]``:

    open PID CONN_ID               the copy's connection is open (setup goes on)
    setup PID CONN_ID              setup is done: the copy is handed out
    ready PID CONN_ID TASK         task number TASK runs on this copy (the test signals after
                                   as many of these as tasks run at once: `together`)
    left-block PID -               the flow body left the with block (both tasks submitted)
    unblocked PID - TASK           a blocking call ran to its end: it was not interrupted
    cleanup-started PID CONN_ID    cleanup began; with sigint_twice and sigterm_during_cleanup
                                   it waits until the file RECORD_FILE.go exists
    cleanup PID CONN_ID OUTCOME    the copy is closed; OUTCOME is ``succeeded`` or ``failed:ErrorType``
    reaped PID CONN_ID             the reaper closed the copy made by PID, from another process

`kill_connection` is the resource's reaper: ``tether reap`` imports this file (it must
not run anything at import) and calls it with the handle that setup remembered.
Nothing here sleeps for ordering: the blocking calls are the faults themselves, and
every wait on the record file is bounded.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

import pymysql

from tether import flow, resource, task
from tether.resources import remember
from tether.runners import DaskRunner, ProcessPoolRunner, RayRunner, ThreadPoolRunner

SERVER = {"host": "127.0.0.1", "port": 3306, "user": "root", "database": "test"}

#: What each fault does; the test module holds what each must lead to.
FAULTS = {
    "task_raises": "task 0 raises TaskBoom; task 1 returns",
    "setup_raises": "setup opens the connection, closes it and raises SetupBoom",
    "cleanup_raises": "the tasks return; cleanup closes the connection, then raises CleanupBoom",
    "body_raises": "the flow body raises BodyBoom inside the with block, after submitting",
    "task_timeout_sleep": "both tasks (timeout_seconds=TASK_TIMEOUT) block in time.sleep",
    "task_timeout_busy": "both tasks (timeout_seconds=TASK_TIMEOUT) spin in a pure-Python loop",
    "task_timeout_c": "both tasks (timeout_seconds=TASK_TIMEOUT) sit in one long C call (pbkdf2_hmac)",
    "flow_timeout": "the flow (timeout_seconds=FLOW_TIMEOUT) waits on tasks that block",
    "sigint": "the tasks block; the test sends SIGINT to the flow process",
    "sigint_twice": "SIGINT, then a second SIGINT while cleanup runs",
    "sigterm": "the tasks block; the test sends SIGTERM to the flow process",
    "sigint_group": "the tasks block; the test sends SIGINT to the whole process group",
    "sigterm_group": "the tasks block; the test sends SIGTERM to the whole process group",
    "sigterm_during_cleanup": "the tasks return; the test sends SIGTERM while cleanup runs",
    "sigkill_reap": "the tasks block; the test SIGKILLs the flow process, then runs tether reap",
    "worker_killed": "task 0 blocks, task 1 returns; the test SIGKILLs task 0's worker process",
}
RUNNERS = ("threads", "processes", "dask", "ray")
TASK_TIMEOUT = 5.0  # long enough for both tasks to be running before it fires
FLOW_TIMEOUT = 10.0
#: The faults whose task bodies block until something from outside ends them.
BLOCKING = {
    "task_timeout_sleep", "task_timeout_busy", "task_timeout_c", "flow_timeout",
    "sigint", "sigint_twice", "sigterm", "sigint_group", "sigterm_group", "sigkill_reap",
}
BLOCK_SECONDS = 300.0  # longer than any cell may take: a block that ends was not interrupted
BOUNDED_WAIT = 60.0


class TaskBoom(ValueError):
    pass


class SetupBoom(RuntimeError):
    pass


class CleanupBoom(RuntimeError):
    pass


class BodyBoom(RuntimeError):
    pass


def note(record: str, kind: str, conn_id: Any = "-", extra: Any = None, pid: int | None = None) -> None:
    """Append one line to the record file in a single write."""
    fields = [kind, str(pid if pid is not None else os.getpid()), str(conn_id)]
    if extra is not None:
        fields.append(str(extra))
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(fields) + "\n").encode())
    finally:
        os.close(fd)


def wait_for(check: Any, what: str) -> None:
    """Poll ``check`` until it is true, at most BOUNDED_WAIT seconds."""
    deadline = time.monotonic() + BOUNDED_WAIT
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"fault cell: waited {BOUNDED_WAIT:g} s for {what}")
        time.sleep(0.02)


def count_lines(record: str, kind: str) -> int:
    with open(record) as f:
        return sum(1 for line in f if line.split(" ", 1)[0] == kind)


# -- the resource and its reaper -------------------------------------------------------


def kill_connection(handle: dict[str, Any]) -> None:
    """Reaper: close the copy's connection from another process (KILL on the server)."""
    conn = pymysql.connect(**SERVER)
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(f"KILL CONNECTION {int(handle['conn_id'])}")
            except pymysql.err.OperationalError as exc:
                if exc.args[0] != 1094:  # "Unknown thread id": the server already dropped it
                    raise
    finally:
        conn.close()
    note(handle["record"], "reaped", handle["conn_id"], pid=handle["pid"])


@resource(reaper=kill_connection)
def connection(record: str, fault: str) -> Any:
    conn = pymysql.connect(**SERVER, autocommit=True)
    conn_id = conn.thread_id()
    remember({"conn_id": conn_id, "record": record, "pid": os.getpid()})
    note(record, "open", conn_id)
    if fault == "setup_raises":
        conn.close()
        raise SetupBoom(f"setup of connection {conn_id} failed on purpose")
    note(record, "setup", conn_id)
    outcome = "succeeded"
    try:
        yield conn
    except BaseException as exc:
        outcome = f"failed:{type(exc).__name__}"
        raise
    finally:
        if fault in ("sigint_twice", "sigterm_during_cleanup"):
            note(record, "cleanup-started", conn_id)
            wait_for(lambda: os.path.exists(record + ".go"), "the test's go file")
        conn.close()
        note(record, "cleanup", conn_id, outcome)
        if fault == "cleanup_raises":
            raise CleanupBoom(f"cleanup of connection {conn_id} failed on purpose")


# -- the tasks and the flow -------------------------------------------------------------


def block(fault: str, record: str, number: int) -> None:
    """The fault's blocking call; it must be interrupted (or abandoned) long before it ends."""
    if fault == "task_timeout_sleep":
        time.sleep(BLOCK_SECONDS)
    elif fault == "task_timeout_c":
        hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 10**9)  # minutes in C, GIL released
    elif fault == "task_timeout_busy":
        deadline = time.monotonic() + BLOCK_SECONDS
        while time.monotonic() < deadline:
            pass
    else:  # interruptible: a pending exception lands between two short sleeps
        deadline = time.monotonic() + BLOCK_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.01)
    note(record, "unblocked", extra=number)


def work_body(conn: Any, number: int, fault: str, record: str, together: int) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        (conn_id,) = cur.fetchone()
    note(record, "ready", conn_id, number)
    wait_for(lambda: count_lines(record, "ready") >= together, f"{together} tasks to be running at once")
    if fault == "task_raises" and number == 0:
        raise TaskBoom(f"task 0 failed on purpose (connection {conn_id})")
    if fault in BLOCKING or (fault == "worker_killed" and number == 0):
        block(fault, record, number)
    return conn_id


work = task(name="work")(work_body)
timed_work = task(name="work", timeout_seconds=TASK_TIMEOUT)(work_body)


@flow(name="fault-cell")
def cell(fault: str, record: str, together: int) -> list[int]:
    job = timed_work if fault.startswith("task_timeout") else work
    with connection(record, fault) as conn:
        futures = [job.submit(conn, number, fault, record, together) for number in range(2)]
        if fault == "body_raises":
            raise BodyBoom("the flow body failed on purpose")
    note(record, "left-block")
    return [future.result() for future in futures]


def together(runner: str) -> int:
    """How many tasks run at once: one per worker process on remote runners; on threads, one,
    since the tasks share the flow process's one connection and tether lets a DB-API
    connection whose driver says ``threadsafety < 2`` (PyMySQL) serve one task at a time."""
    return 1 if runner == "threads" else 2


def make_runner(name: str) -> Any:
    if name == "threads":
        return ThreadPoolRunner(max_workers=4)
    if name == "processes":
        return ProcessPoolRunner(max_workers=2)
    if name == "dask":
        return DaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1})
    if name == "ray":
        return RayRunner(init_kwargs={"num_cpus": 2}, workers=2)
    raise SystemExit(f"unknown runner {name!r}; one of {', '.join(RUNNERS)}")


def main(argv: list[str]) -> None:
    fault, runner, record = argv[1:4]
    if fault not in FAULTS:
        raise SystemExit(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
    timeout = FLOW_TIMEOUT if fault == "flow_timeout" else None
    cell.with_options(task_runner=make_runner(runner), timeout_seconds=timeout)(fault, record, together(runner))


if __name__ == "__main__":
    main(sys.argv)
