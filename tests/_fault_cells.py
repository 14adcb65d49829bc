"""Running the fault matrix's cells and gathering what each one left behind.

A cell is one fault on one runner: a subprocess of ``tests/scripts/fault_cell.py`` in a
process group and a ``TETHER_HOME`` of its own. `run_cell` starts it, waits for the
markers in its record file before sending a signal (never for a time), waits for the
flow process and for every process it started (found by a marker in their environment,
so workers that outlive their parent are found too), then gathers the `Evidence`: the
record file's lines, the exit code, the flow run and its ledger as the store's public API
gives them, the orphans before and after ``tether reap`` (run through its entry point), and
which of the cell's own MariaDB connection ids the server still lists.

`CellPool` runs the cells a few at a time, Dask and Ray cells weighing more, each on a
thread of its own; a test waits for its own cell's evidence. This module asserts nothing:
test_fault_matrix.py says what each cell's evidence must show.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from scripts.fault_cell import together
from scripts.store_evidence import store_evidence
from tether.store import StoreSchemaError, open_store

SCRIPT = Path(__file__).parent / "scripts" / "fault_cell.py"
STORE_EVIDENCE = SCRIPT.with_name("store_evidence.py")
_TETHER = Path(sys.executable).with_name("tether")
TETHER = [str(_TETHER)] if _TETHER.exists() else [sys.executable, "-m", "tether.cli"]
SERVER = {"host": "127.0.0.1", "port": 3306, "user": "root", "database": "test"}
GRACE_SECONDS = "2"  # TETHER_INTERRUPT_GRACE_SECONDS in every cell: abandoned calls are given up quickly
#: When a cell hangs: its flow process gets START_SECONDS to start a task (starting a Dask or
#: Ray cluster takes 10-40 s on a busy machine), then AFTER_READY[runner] seconds from then on
#: to end (a healthy cell needs < 25); a hung cell costs the matrix that long.
START_SECONDS = 120.0
AFTER_READY = {"threads": 45.0, "processes": 45.0, "dask": 60.0, "ray": 60.0}
DRAIN_SECONDS = 15.0  # how long the processes a cell started may outlive its flow process
# Ray's processes end with a SIGKILLed flow process too: the kernel sends the head RayRunner
# started SIGTERM (PR_SET_PDEATHSIG), which stops the raylet gracefully, whose dashboard and
# runtime-env agents then exit within seconds (see runners/_ray_head.py); the head gives each
# process a second before SIGKILL, so a busy machine may take a few more.
RAY_DRAIN_SECONDS = 20.0
#: Faults that start by waiting for the tasks to run, then send something.
SENT = {"sigint", "sigint_twice", "sigterm", "sigint_group", "sigterm_group", "sigkill_reap", "worker_killed"}


@dataclass(frozen=True)
class Cell:
    fault: str
    runner: str

    @property
    def id(self) -> str:
        return f"{self.runner}-{self.fault}"

    @property
    def together(self) -> int:
        return together(self.runner)


@dataclass(frozen=True)
class Line:
    """One line of a record file: ``KIND PID CONN_ID [EXTRA]``."""

    kind: str
    pid: int
    conn_id: int | None
    extra: str | None

    @classmethod
    def parse(cls, text: str) -> Line:
        kind, pid, conn_id, *rest = text.split(" ", 3)
        return cls(kind, int(pid), None if conn_id == "-" else int(conn_id), rest[0] if rest else None)

    def __str__(self) -> str:
        return " ".join(str(x) for x in (self.kind, self.pid, self.conn_id, self.extra) if x is not None)


@dataclass
class Evidence:
    """What one cell left behind; ``error`` is set if gathering it failed."""

    cell: Cell
    directory: Path
    flow_pid: int = 0
    exit_code: int | None = None
    hung: str | None = None  # why the cell counts as hung (it was ended by the test), or None
    seconds: float = 0.0
    provoking: str | None = None  # a marker the test waited for in vain
    lines: list[Line] = field(default_factory=list)
    lines_before_reap: list[Line] = field(default_factory=list)  # the record as the cell's processes left it
    left_running: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    detail: dict[str, Any] | None = None
    orphans_before: list[dict[str, Any]] = field(default_factory=list)
    reap: subprocess.CompletedProcess[str] | None = None
    ledger_after: list[dict[str, Any]] = field(default_factory=list)
    orphans_after: list[dict[str, Any]] = field(default_factory=list)
    still_connected: list[int] = field(default_factory=list)
    stderr: str = ""
    error: str | None = None

    def of(self, *kinds: str) -> list[Line]:
        return [line for line in self.lines if line.kind in kinds]

    def story(self) -> str:
        """The record, the exit and the end of stderr: printed under a failed cell's problems."""
        record = "\n".join(f"    {line}" for line in self.lines) or "    (empty)"
        tail = "\n".join(f"    {line}" for line in self.stderr.strip().splitlines()[-(60 if self.hung else 12):])
        return (
            f"cell {self.cell.id}: exit code {self.exit_code}, {self.seconds:.1f} s"
            f"{' (hung: ended by SIGABRT, then SIGKILL, at the deadline)' if self.hung else ''}; files in {self.directory}\n"
            f"  record:\n{record}\n  stderr (end):\n{tail}"
        )


# -- the processes of a cell -------------------------------------------------------------


def marked_processes(marker: bytes) -> list[int]:
    """Every live process whose environment holds ``marker`` (the cell's, however deep)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue  # gone, a zombie, or not ours
    return found


def describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = "?"
    return f"{pid} {command[:120]}"


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def signal_pending(pid: int, signum: int) -> bool:
    """True while ``signum``, sent to the process, has not been taken by any of its threads."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return False
    return bool(int(status["ShdPnd"].strip(), 16) & (1 << (signum - 1)))


class Deadline:
    """When a cell counts as hung (see START_SECONDS and AFTER_READY)."""

    def __init__(self, runner: str, record: Path) -> None:
        self.record = record
        self.after_ready = AFTER_READY[runner]
        self.limit = time.monotonic() + START_SECONDS
        self.task_started = False

    def passed(self) -> bool:
        if not self.task_started and any(line.kind == "ready" for line in read_lines(self.record)):
            self.task_started = True
            self.limit = time.monotonic() + self.after_ready
        return time.monotonic() > self.limit

    def __str__(self) -> str:
        if self.task_started:
            return f"within {self.after_ready:g} s of its first task starting"
        return f"within {START_SECONDS:g} s, and no task started"


def wait_for(check: Callable[[], bool], proc: subprocess.Popen[bytes], deadline: Deadline) -> bool:
    """Poll ``check`` until true; False if the flow process ended first or the deadline passed."""
    while not check():
        if proc.poll() is not None or deadline.passed():
            return check()
        time.sleep(0.01)
    return True


def read_lines(record: Path) -> list[Line]:
    if not record.exists():
        return []
    return [Line.parse(text) for text in record.read_text().splitlines() if text]


# -- one cell ---------------------------------------------------------------------------


def cell_env(cell: Cell, directory: Path, marker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "RAY_ADDRESS"))}
    home = directory / "home"
    home.mkdir(parents=True, exist_ok=True)
    # Ray's dashboard agent probes cloud metadata addresses unless this file says the cluster is local.
    (directory / "ray_bootstrap_config.yaml").write_text("provider: {type: local}\n")
    env.update(
        TETHER_HOME=str(home),
        TETHER_INTERRUPT_GRACE_SECONDS=GRACE_SECONDS,
        TETHER_LOGGING_LEVEL="WARNING",
        TETHER_FAULT_CELL=marker,
        HOME=str(directory),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        PYTHONFAULTHANDLER="1",  # a hung cell is ended by SIGABRT first: its stacks tell where it hung
        PYTHONPATH=os.pathsep.join([str(SCRIPT.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def provoke(cell: Cell, proc: subprocess.Popen[bytes], record: Path, deadline: Deadline) -> str | None:
    """Send the cell's signal once its markers say it is time; returns the marker waited for in vain."""
    fault = cell.fault

    def count(kind: str) -> int:
        return len([line for line in read_lines(record) if line.kind == kind])

    def deliver(signum: int) -> None:
        """Send ``signum`` to the flow process and wait until one of its threads took it: from
        then on its Python handler runs before the main thread runs anything else."""
        proc.send_signal(signum)
        wait_for(lambda: not signal_pending(proc.pid, signum), proc, deadline)

    if fault in SENT:
        if not wait_for(lambda: count("ready") >= cell.together, proc, deadline):
            return f"{cell.together} 'ready' line(s)"
    if fault == "sigint":
        proc.send_signal(signal.SIGINT)
    elif fault == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif fault == "sigint_group":
        os.killpg(proc.pid, signal.SIGINT)
    elif fault == "sigterm_group":
        os.killpg(proc.pid, signal.SIGTERM)
    elif fault == "sigkill_reap":
        proc.send_signal(signal.SIGKILL)
    elif fault == "worker_killed":
        victims = {line.pid for line in read_lines(record) if line.kind == "ready" and line.extra == "0"}
        if len(victims) != 1 or proc.pid in victims:
            return f"one worker process running task 0 (found {sorted(victims)}; the flow process is {proc.pid})"
        os.kill(victims.pop(), signal.SIGKILL)
    elif fault in ("sigint_twice", "sigterm_during_cleanup"):
        if fault == "sigint_twice":
            proc.send_signal(signal.SIGINT)
        if not wait_for(lambda: count("cleanup-started") >= 1, proc, deadline):
            return "a 'cleanup-started' line"
        deliver(signal.SIGINT if fault == "sigint_twice" else signal.SIGTERM)
        (record.parent / (record.name + ".go")).touch()
    return None


def run_cell(cell: Cell, base: Path, stopping: threading.Event) -> Evidence:
    directory = base / cell.id
    directory.mkdir(parents=True)
    record = directory / "record.log"
    marker = f"{cell.id}-{uuid.uuid4().hex[:8]}"
    evidence = Evidence(cell, directory)
    env = cell_env(cell, directory, marker)
    started = time.monotonic()
    deadline = Deadline(cell.runner, record)
    with open(directory / "stdout.log", "wb") as out, open(directory / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), cell.fault, cell.runner, str(record)],
            env=env, cwd=directory, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    evidence.flow_pid = proc.pid
    mark = f"TETHER_FAULT_CELL={marker}".encode()
    try:
        evidence.provoking = provoke(cell, proc, record, deadline)
        while proc.poll() is None and not deadline.passed() and not stopping.is_set():
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            evidence.hung = f"the flow process did not end {deadline}"
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack to stderr
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        evidence.exit_code = proc.wait()
        evidence.seconds = time.monotonic() - started
        drained = time.monotonic() + (RAY_DRAIN_SECONDS if cell.runner == "ray" else DRAIN_SECONDS)
        while (left := marked_processes(mark)) and time.monotonic() < drained:
            time.sleep(0.1)
        evidence.left_running = [describe(pid) for pid in left]
        kill_all(left)
        evidence.lines = evidence.lines_before_reap = read_lines(record)
        evidence.stderr = (directory / "stderr.log").read_text(errors="replace")
        gather(evidence, env)
    except Exception:  # noqa: BLE001 - reported by the cell's test, not lost on this thread
        evidence.error = traceback.format_exc()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_all(marked_processes(mark))
    return evidence


def gather(evidence: Evidence, env: dict[str, str]) -> None:
    """The store's and the server's side of the story, once every process of the cell is gone."""
    if (Path(env["TETHER_HOME"]) / "tether.db").exists():
        before = read_store(env)
        evidence.runs, evidence.detail, evidence.orphans_before = before["runs"], before["detail"], before["orphans"]
        if evidence.orphans_before:
            evidence.reap = subprocess.run(
                [*TETHER, "reap", "--json"], env=env, cwd="/", capture_output=True, text=True, timeout=60, check=False
            )
            evidence.lines = read_lines(evidence.directory / "record.log")
            after = read_store(env)
        else:
            after = before
        evidence.ledger_after = (after["detail"] or {}).get("resources", [])
        evidence.orphans_after = after["orphans"]
    ids = sorted({line.conn_id for line in evidence.of("open") if line.conn_id is not None})
    evidence.still_connected = connected(ids)


def read_store(env: dict[str, str]) -> dict[str, Any]:
    """What the cell's store says (see store_evidence.py), read in this process: a process of
    its own costs a second of CPU for importing tether, times ~70 cells on a busy machine.
    If the store is newer than the tether this process imported (one that landed while the
    matrix ran), store_evidence.py reads it with the tether on disk now."""
    try:
        return store_evidence(open_store(f"sqlite:///{Path(env['TETHER_HOME']) / 'tether.db'}"))
    except StoreSchemaError:
        pass
    done = subprocess.run(
        [sys.executable, str(STORE_EVIDENCE)], env=env, cwd="/", capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"reading the cell's store failed (exit {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout)


def connected(ids: list[int], patience: float = 10.0) -> list[int]:
    """Which of ``ids`` the server still lists, after giving it ``patience`` seconds to notice
    the connections of killed processes (their sockets close with them)."""
    if not ids:
        return []
    conn = pymysql.connect(**SERVER, autocommit=True)
    try:
        deadline = time.monotonic() + patience
        while True:
            with conn.cursor() as cur:
                marks = ", ".join(["%s"] * len(ids))
                cur.execute(f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({marks})", ids)
                alive = sorted(int(row[0]) for row in cur.fetchall())
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.1)
    finally:
        conn.close()


# -- the pool ---------------------------------------------------------------------------


WEIGHT = {"threads": 1, "processes": 1, "dask": 2, "ray": 2}


class CellPool:
    """Runs cells in the order given, at most ``capacity`` weight at a time."""

    def __init__(self, base: Path, capacity: int = 4) -> None:
        self.base = base
        self.capacity = capacity
        self._free = capacity
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._futures: dict[str, Future[Evidence]] = {}
        self._threads: list[threading.Thread] = []
        self._dispatcher: threading.Thread | None = None
        self.started = time.monotonic()
        self.finished: float | None = None
        self.timings: list[str] = []

    def start(self, cells: list[Cell]) -> None:
        self._futures = {cell.id: Future() for cell in cells}
        self._dispatcher = threading.Thread(target=self._dispatch, args=(cells,), name="fault-matrix", daemon=True)
        self._dispatcher.start()

    def _dispatch(self, cells: list[Cell]) -> None:
        for cell in cells:
            weight = min(WEIGHT[cell.runner], self.capacity)
            with self._cond:
                while self._free < weight and not self._stopping.is_set():
                    self._cond.wait()
                if self._stopping.is_set():
                    self._futures[cell.id].cancel()
                    continue
                self._free -= weight
            thread = threading.Thread(target=self._run, args=(cell, weight), name=f"cell-{cell.id}", daemon=True)
            self._threads.append(thread)
            thread.start()
        for thread in self._threads:
            thread.join()
        self.finished = time.monotonic()
        self._timing(f"all {len(cells)} cells: {self.finished - self.started:.1f} s")

    def _run(self, cell: Cell, weight: int) -> None:
        future = self._futures[cell.id]
        began = time.monotonic()
        try:
            evidence = run_cell(cell, self.base, self._stopping)
            future.set_result(evidence)
            self._timing(f"{cell.id:<36} flow {evidence.seconds:6.1f} s  cell {time.monotonic() - began:6.1f} s"
                         f"  from +{began - self.started:5.1f} s{'  HUNG' if evidence.hung else ''}")
        except BaseException as exc:  # noqa: BLE001 - handed to the test of this cell
            future.set_exception(exc)
        finally:
            with self._cond:
                self._free += weight
                self._cond.notify_all()

    def _timing(self, line: str) -> None:
        """One line per cell: what took the time (printed at the end of the module)."""
        with self._cond:
            self.timings.append(line)

    def evidence(self, cell: Cell, timeout: float) -> Evidence:
        return self._futures[cell.id].result(timeout=timeout)

    def stop(self) -> None:
        """Start no more cells, end the running ones (their threads kill what they started)."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=60)


def as_json(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)
