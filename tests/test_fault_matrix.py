"""The fault matrix: every fault on every runner, each cell judged from what it left behind.

A cell is ``tests/scripts/fault_cell.py FAULT RUNNER RECORD``: a flow whose resource is a
real MariaDB connection per copy, two tasks using it, and one fault (a task, setup,
cleanup or flow body raising; a task timeout in a sleep, a busy loop or a C call; a
flow timeout; SIGINT once or twice, SIGTERM, either to the whole process group, SIGTERM
during cleanup; SIGKILL of the flow process then ``tether reap``; a worker killed).
Every cell is judged on the promise of API.md sections 2 and 5:

- each copy is closed exactly once: by its cleanup, with the outcome thrown in (or
  ``succeeded``), or, when its process was killed, listed as an orphan and reaped once;
- the flow run's final state in the store, its error, the task runs all final;
- the ledger has one row per copy, closed or reaped, and no orphan is left;
- the exit code (0, 1, 130 for Ctrl-C, 143 for SIGTERM);
- the server no longer lists any of the cell's own connection ids;
- no process the cell started is left running.

A failing cell lists every broken promise, then its record and the end of its stderr.
The cells run a few at a time from one module-scoped `CellPool` (see _fault_cells.py),
heaviest first; each test waits for its own cell. Cells that do not apply (a worker
killed on the thread runner, whose workers are the flow process) are not generated.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from dataclasses import dataclass

import pymysql
import pytest

from _fault_cells import SERVER, Cell, CellPool, Evidence, as_json
from conftest import _service_missing
from scripts.fault_cell import FAULTS

RUNNERS = ["ray", "dask", "processes", "threads"]  # heaviest first: the pool starts them in this order
if importlib.util.find_spec("ray") is None:
    RUNNERS.remove("ray")
CELLS = [
    Cell(fault, runner) for runner in RUNNERS for fault in FAULTS if not (fault == "worker_killed" and runner == "threads")
]
#: Cells at once, by weight: a thread or process cell weighs 1, a Dask or Ray cell 2. Most of
#: a cell is waiting (processes and clusters starting, timeouts, grace periods), not CPU.
CAPACITY = int(os.environ.get("TETHER_FAULT_MATRIX_CAPACITY", "6"))
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
SIGINT_EXIT = (130, -signal.SIGINT)  # Python ends on an uncaught KeyboardInterrupt by SIGINT: a shell says 130


@dataclass(frozen=True)
class Expected:
    state: str  # the flow run's final state type in the store
    exit_codes: tuple[int, ...]
    error: str | None  # the error type the flow run's error names
    #: What each copy's cleanup is told: "succeeded", "failed:ErrorType", or "failed:" for any
    #: failure; None when setup fails, so that there is no copy to clean up.
    outcome: str | None
    #: A process of the cell is killed: its copies are orphans that ``tether reap`` closes.
    killed: bool = False


EXPECTED = {
    "task_raises": Expected("FAILED", (1,), "TaskBoom", "failed:TaskBoom"),
    "setup_raises": Expected("FAILED", (1,), "SetupBoom", None),
    "cleanup_raises": Expected("FAILED", (1,), "CleanupError", "succeeded"),
    "body_raises": Expected("FAILED", (1,), "BodyBoom", "failed:BodyBoom"),
    "task_timeout_sleep": Expected("FAILED", (1,), "TaskRunTimeout", "failed:TaskRunTimeout"),
    "task_timeout_busy": Expected("FAILED", (1,), "TaskRunTimeout", "failed:TaskRunTimeout"),
    "task_timeout_c": Expected("FAILED", (1,), "TaskRunTimeout", "failed:TaskRunTimeout"),
    "flow_timeout": Expected("CANCELLED", (1,), "FlowRunTimeout", "failed:FlowRunTimeout"),
    "sigint": Expected("CANCELLED", SIGINT_EXIT, "KeyboardInterrupt", "failed:KeyboardInterrupt"),
    "sigint_twice": Expected("CANCELLED", SIGINT_EXIT, "KeyboardInterrupt", "failed:KeyboardInterrupt"),
    "sigterm": Expected("CANCELLED", (143,), "Terminated", "failed:Terminated"),
    "sigint_group": Expected("CANCELLED", SIGINT_EXIT, "KeyboardInterrupt", "failed:KeyboardInterrupt"),
    "sigterm_group": Expected("CANCELLED", (143,), "Terminated", "failed:Terminated"),
    # The work was done and committed: the run says so, the exit code says SIGTERM came (issue #13, 15).
    "sigterm_during_cleanup": Expected("COMPLETED", (143,), None, "succeeded"),
    "sigkill_reap": Expected("CRASHED", (-signal.SIGKILL,), None, "failed:", killed=True),
    "worker_killed": Expected("FAILED", (1,), None, "failed:", killed=True),
}
assert set(EXPECTED) == set(FAULTS), "every fault of fault_cell.py has its expectation here"


def require_mariadb() -> None:
    try:
        pymysql.connect(**SERVER, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means the service is missing
        _service_missing("MariaDB", exc)


@pytest.fixture(scope="module")
def matrix(request, tmp_path_factory):
    """Every selected cell, started at once in a bounded pool; each test takes its own cell's evidence."""
    require_mariadb()
    selected = [
        item.callspec.params["cell"]
        for item in request.session.items
        if item.module is request.module and "cell" in getattr(getattr(item, "callspec", None), "params", {})
    ]
    pool = CellPool(tmp_path_factory.mktemp("fault-matrix"), capacity=CAPACITY)
    pool.start(selected)
    yield pool
    pool.stop()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # what each cell took, in the run's output
            reporter.write_line("")
            for line in pool.timings:
                reporter.write_line(f"fault matrix: {line}")


# A test waits while the cells before its own run; every cell is bounded by its deadline.
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("cell", CELLS, ids=[cell.id for cell in CELLS])
def test_fault_cell(matrix, cell):
    evidence = matrix.evidence(cell, timeout=3500)
    problems = judge(evidence)
    assert not problems, "\n".join(problems) + "\n\n" + evidence.story()


# -- the judgment ------------------------------------------------------------------------


def judge(ev: Evidence) -> list[str]:
    """Every promise the cell's evidence shows broken, most telling first."""
    if ev.error is not None:
        return [f"gathering the cell's evidence failed: {ev.error.strip().splitlines()[-1]}\n{ev.error}"]
    expected = EXPECTED[ev.cell.fault]
    problems: list[str] = []
    if ev.hung:
        problems.append(f"{ev.hung}; the test ended it")
    if ev.provoking is not None:
        problems.append(f"the flow process ended, or the deadline passed, before {ev.provoking} (nothing was sent)")
    if not ev.hung and ev.exit_code not in expected.exit_codes:
        problems.append(f"exit code {ev.exit_code}, expected {' or '.join(map(str, expected.exit_codes))}")
    problems += judge_copies(ev, expected)
    problems += judge_store(ev, expected)
    if ev.still_connected:
        problems.append(f"the server still lists the cell's connection(s) {ev.still_connected} (information_schema.PROCESSLIST)")
    if ev.left_running:
        problems.append(f"processes of the cell outlived its flow process (killed by the test): {ev.left_running}")
    return problems


def copies_of(ev: Evidence) -> dict[int, int]:
    """conn_id -> pid of every copy that was set up."""
    return {line.conn_id: line.pid for line in ev.of("setup") if line.conn_id is not None}


def judge_copies(ev: Evidence, expected: Expected) -> list[str]:
    problems: list[str] = []
    copies = copies_of(ev)
    if expected.outcome is None:  # setup raised
        if not ev.of("open"):
            problems.append("setup never ran")
        if copies:
            problems.append(f"setup raised, yet copies were handed out: {sorted(copies)}")
        if ev.of("cleanup", "reaped"):
            problems.append(f"a copy whose setup failed was closed again: {[str(x) for x in ev.of('cleanup', 'reaped')]}")
        return problems
    wanted = 1 if ev.cell.runner == "threads" else 2
    if len(copies) != wanted:
        problems.append(f"{len(copies)} copies were set up, expected {wanted} (one per worker that ran a task)")
    if ev.cell.runner != "threads" and ev.flow_pid in copies.values():
        problems.append(f"the flow process {ev.flow_pid} set up a copy, though no task runs there")
    for ready in ev.of("ready"):
        if copies.get(ready.conn_id) != ready.pid:
            problems.append(f"task {ready.extra} on process {ready.pid} used connection {ready.conn_id}, not its own copy")
    unblocked = ev.of("unblocked")
    if unblocked:
        problems.append(f"a blocking call ran to its end instead of being interrupted: {[str(x) for x in unblocked]}")
    closed_by_then = {line.conn_id for line in ev.lines_before_reap if line.kind in ("cleanup", "reaped")}
    listed = {orphan_conn(o) for o in ev.orphans_before}
    for conn_id, pid in sorted(copies.items()):
        cleanups = [line for line in ev.of("cleanup") if line.conn_id == conn_id]
        reaps = [line for line in ev.of("reaped") if line.conn_id == conn_id]
        where = f"copy {conn_id} (process {pid})"
        if len(cleanups) + len(reaps) != 1:
            problems.append(
                f"{where} was closed {len(cleanups) + len(reaps)} times ({len(cleanups)} cleanup(s), "
                f"{len(reaps)} reap(s)); expected exactly once"
            )
        if reaps and not expected.killed:
            problems.append(f"{where} was reaped, not cleaned up, though no process of the cell was killed")
        for line in cleanups:
            if not outcome_fits(line.extra or "", expected.outcome):
                problems.append(f"{where}'s cleanup was told {line.extra!r}, expected {expected.outcome!r}")
        if conn_id not in closed_by_then and conn_id not in listed:
            problems.append(f"{where} was never closed, and `tether resources --orphans` does not list it")
        if conn_id in closed_by_then and conn_id in listed:
            problems.append(f"{where} was cleaned up, yet `tether resources --orphans` lists it (it would be reaped again)")
    strangers = listed - set(copies)
    if strangers:
        problems.append(f"orphans listed that are no copy of this cell: {sorted(map(str, strangers))}")
    if ev.orphans_before and not expected.killed:
        problems.append(f"orphans listed though no process was killed: {[o['name'] for o in ev.orphans_before]}")
    if ev.reap is not None and ev.reap.returncode != 0:
        problems.append(f"tether reap exited {ev.reap.returncode}: {(ev.reap.stdout + ev.reap.stderr).strip()[-600:]}")
    if ev.orphans_after:
        problems.append(f"orphans left after tether reap: {as_json(ev.orphans_after)}")
    return problems


def outcome_fits(outcome: str, expected: str | None) -> bool:
    return outcome.startswith(expected) if expected and expected.endswith(":") else outcome == expected


def orphan_conn(entry: dict) -> object:
    handle = entry.get("handle")
    return handle.get("conn_id") if isinstance(handle, dict) else f"#{entry.get('id')} {entry.get('name')}"


def judge_store(ev: Evidence, expected: Expected) -> list[str]:
    if len(ev.runs) != 1:
        return [f"the store has {len(ev.runs)} flow run(s), expected the cell's one: {as_json(ev.runs)}"]
    run = ev.runs[0]
    problems: list[str] = []
    said = f"{run['state_type']} ({run['state_name']}: {run['state_message']!r})"
    if run["state_type"] != expected.state:
        problems.append(f"the flow run is recorded {said}, expected {expected.state}")
    if expected.error and expected.error not in f"{run['error']} {run['state_message']}":
        problems.append(f"the flow run's error does not name {expected.error}: {said}")
    tasks = (ev.detail or {}).get("task_runs", [])
    if ev.cell.fault != "sigkill_reap":  # a killed flow process cannot finish its task runs' records
        wanted = 0 if expected.outcome is None else 2
        if len(tasks) != wanted:
            problems.append(f"{len(tasks)} task run(s) recorded, expected {wanted}")
        unfinished = [f"{t['name']} {t['state_type']}" for t in tasks if t["state_type"] not in FINAL]
        if unfinished:
            problems.append(f"task runs not in a final state after the flow ended: {unfinished}")
    problems += judge_ledger(ev, expected)
    return problems


def judge_ledger(ev: Evidence, expected: Expected) -> list[str]:
    rows = ev.ledger_after
    problems: list[str] = []
    if expected.outcome is None:
        opened = len(ev.of("open"))
        if len(rows) != opened or any(r["status"] != "setup-failed" for r in rows):
            problems.append(
                f"the ledger should hold {opened} 'setup-failed' row(s), one per setup that ran: "
                f"{[(r['id'], r['status']) for r in rows]}"
            )
        return problems
    copies = copies_of(ev)
    by_conn = {orphan_conn(r): r for r in rows}
    if len(rows) != len(copies) or set(by_conn) != set(copies):
        problems.append(
            f"the ledger's rows {[(orphan_conn(r), r['status']) for r in rows]} are not one per copy {sorted(copies)}"
        )
    reaped = {line.conn_id for line in ev.of("reaped")}
    closed = "cleanup-failed" if ev.cell.fault == "cleanup_raises" else "closed"
    for conn_id, pid in sorted(copies.items()):
        row = by_conn.get(conn_id)
        if row is None:
            continue
        status = "reaped" if conn_id in reaped else closed
        if row["status"] != status:
            problems.append(f"ledger row #{row['id']} of copy {conn_id} says {row['status']!r}, expected {status!r}")
        if row["pid"] != pid:
            problems.append(f"ledger row #{row['id']} of copy {conn_id} names process {row['pid']}, the copy's is {pid}")
        told = next((line.extra for line in ev.of("cleanup") if line.conn_id == conn_id), None)
        scope = None if told is None else told.split(":")[0]  # what the cleanup was told: succeeded or failed
        if scope is not None and row["scope_outcome"] != scope:
            problems.append(f"ledger row #{row['id']} of copy {conn_id} records the scope {row['scope_outcome']!r}, its cleanup was told {told!r}")
        if ev.cell.fault == "cleanup_raises" and "CleanupBoom" not in (row["cleanup_error"] or ""):
            problems.append(f"ledger row #{row['id']} of copy {conn_id} does not record the cleanup's error: {row['cleanup_error']!r}")
    return problems


def test_every_fault_and_runner_is_a_cell():
    faults = {cell.fault for cell in CELLS}
    assert faults == set(FAULTS)
    for runner in RUNNERS:
        expected = len(FAULTS) - (runner == "threads")
        assert len([c for c in CELLS if c.runner == runner]) == expected
