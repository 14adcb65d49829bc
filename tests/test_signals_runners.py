"""Signals and timeouts on the runners whose workers are other processes.

Each test runs tests/scripts/runner_signal_flow.py in a subprocess of its own session
and judges it by what the resource wrote to its record file (setups, cleanups with
their outcome and process id), the flow run's final state in the store and the exit
status:

- Ctrl-C or SIGTERM to the flow's whole process group (a terminal, ``kill -- -PGID``,
  a service manager) reaches the workers too: they must outlive it, so that each
  cleans up its copy with the interrupt;
- SIGTERM on Ray (``ray.init`` installs a handler of its own);
- a Dask or Ray task blocked in ``time.sleep`` past its timeout ends within the grace
  period;
- SIGTERM during the cleanup of a flow whose work succeeded: the work is recorded
  Completed, with the signal noted, and the process still exits 143.

The cells of the selected tests start together (most of a cell's time is a cluster
starting and stopping); each test then drives and judges its own.

Last, in this process: what an interrupt that comes once the work is over decides
(nothing: no outer resource is rolled back, the state stays Completed).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

import tether.store
from tether import flow, resource, task
from tether._context import current_run
from tether._errors import FlowRunTimeout, Terminated
from tether._engine._flow_run import FlowRun

# The cells start together (see `cells`): under load, a Ray or Dask cell alone may take
# longer to come up than the suite's default timeout per test.
pytestmark = pytest.mark.timeout(600)

SCRIPT = Path(__file__).parent / "scripts" / "runner_signal_flow.py"
EXIT = {signal.SIGTERM: {143}, signal.SIGINT: {130, -signal.SIGINT}}  # Python re-raises SIGINT on KeyboardInterrupt
OUTCOME = {signal.SIGTERM: "Terminated", signal.SIGINT: "KeyboardInterrupt"}


#: Each cell: (runner, mode) of the flow script; the tests name theirs with ``cell``.
CELLS = {
    "processes-hold-SIGTERM": ("processes", "hold"),
    "processes-hold-SIGINT": ("processes", "hold"),
    "dask-hold-SIGTERM": ("dask", "hold"),
    "dask-hold-SIGINT": ("dask", "hold"),
    "ray-hold": ("ray", "hold"),
    "hijacking-hold": ("hijacking", "hold"),
    "dask-timeout": ("dask", "timeout"),
    "ray-timeout": ("ray", "timeout"),
    "threads-commit": ("threads", "commit"),
    "processes-commit": ("processes", "commit"),
}
NEEDS = {"dask": "distributed", "ray": "ray"}
#: A short grace period only where the test waits for it to pass; elsewhere a loaded machine
#: must not make an interrupted task look stuck (it would end Crashed, not Cancelled).
GRACE = {"timeout": "1"}


def installed(runner: str) -> bool:
    """Looked up, not imported: the Ray tests must be the first to import Ray in this process."""
    module = NEEDS.get(runner)
    return module is None or importlib.util.find_spec(module) is not None


class Cell:
    """One run of the flow script: its process, its record file, its store."""

    def __init__(self, name: str, tmp_path: Path, runner: str, mode: str) -> None:
        self.name = name
        self.record = tmp_path / "record.log"
        self.home = tmp_path / "home"
        env = {**os.environ, "TETHER_HOME": str(self.home), "TETHER_INTERRUPT_GRACE_SECONDS": GRACE.get(mode, "10"), "PYTHONUNBUFFERED": "1"}
        env.pop("TETHER_STORE", None)  # the store is on: the final state is read from it
        env.pop("TETHER_DATABASE_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), runner, mode, str(self.record)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
        )

    def lines(self) -> list[list[str]]:
        return [line.split() for line in self.record.read_text().splitlines()] if self.record.exists() else []

    def wait_for(self, what: str, done: Callable[[list[list[str]]], bool], timeout: float = 120) -> None:
        """Wait until the record shows ``what`` (the flow's workers write it)."""
        deadline = time.monotonic() + timeout
        while not done(self.lines()):
            if self.proc.poll() is not None:
                raise AssertionError(f"the flow ended before {what}: {self.lines()}\n{self.proc.stderr.read()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no {what} within {timeout} s: {self.lines()}")
            time.sleep(0.02)

    def signal_group(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)

    def read_stderr_until(self, marker: str) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            if marker in line:
                return
        raise AssertionError(f"the flow never logged {marker!r}: {self.lines()}")

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return self.proc.returncode, err

    def assert_nothing_left(self) -> None:
        """No process of the flow's session outlives it (a Dask worker, Ray's own processes)."""
        session = self.proc.pid
        deadline = time.monotonic() + 30
        while True:
            left = []
            for process in psutil.process_iter(["pid", "status", "cmdline"]):
                try:
                    if os.getsid(process.pid) == session and process.info["status"] != psutil.STATUS_ZOMBIE:
                        left.append((process.pid, " ".join(process.info["cmdline"] or [])[:100]))
                except (ProcessLookupError, PermissionError):
                    continue
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not left, f"processes of the flow's session still running after it exited: {left}"

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.communicate()

    def flow_run(self) -> tether.store.StoredFlowRun:
        store = tether.store.open_store(f"sqlite:///{self.home / 'tether.db'}")
        try:
            (run,) = store.flow_runs()
            return run
        finally:
            store.close()

    def task_runs(self) -> list[object]:
        store = tether.store.open_store(f"sqlite:///{self.home / 'tether.db'}")
        try:
            return list(store.flow_run(store.flow_runs()[0].id).task_runs)
        finally:
            store.close()


@pytest.fixture(scope="module")
def cells(request, tmp_path_factory):
    """The cells of the selected tests of this module, started at once."""
    wanted = {
        item.callspec.params["cell"]
        for item in request.session.items
        if item.module is sys.modules[__name__] and hasattr(item, "callspec") and "cell" in item.callspec.params
    }
    started = {
        name: Cell(name, tmp_path_factory.mktemp(name), *CELLS[name])
        for name in sorted(wanted)
        if installed(CELLS[name][0])
    }
    yield started
    for cell in started.values():
        if cell.proc.poll() is None:
            cell.kill()


@pytest.fixture
def cell(request, cells):
    name = request.param
    runner = CELLS[name][0]
    if not installed(runner):
        pytest.skip(f"{NEEDS[runner]} is not installed")
    return cells[name]


def steps(lines: list[list[str]], step: str) -> list[list[str]]:
    return [line for line in lines if line[0] == step]


def assert_gone(pids: set[int], within: float = 30) -> None:
    """The workers exit with their flow (reparented, they may take a moment to be reaped)."""
    deadline = time.monotonic() + within
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.05)
    assert not alive, f"worker processes still running after the flow exited: {alive}"


def two_tasks_ready(lines: list[list[str]]) -> bool:
    return len({line[-1] for line in steps(lines, "ready")}) == 2


@pytest.mark.parametrize("cell", ["processes-hold-SIGTERM", "processes-hold-SIGINT", "dask-hold-SIGTERM", "dask-hold-SIGINT"], indirect=True)
def test_a_signal_to_the_process_group_cleans_up_every_copy_with_the_interrupt(cell):
    signum = signal.SIGTERM if cell.name.endswith("SIGTERM") else signal.SIGINT
    cell.wait_for("two tasks holding a copy each on two workers", two_tasks_ready)
    cell.signal_group(signum)
    code, err = cell.finish()
    lines = cell.lines()
    setups = steps(lines, "setup")
    cleanups = steps(lines, "cleanup")
    assert len(setups) == 2 and len({s[-1] for s in setups}) == 2, lines
    assert sorted(c[-1] for c in cleanups) == sorted(s[-1] for s in setups), lines  # once per copy, where it was made
    assert {c[1] for c in cleanups} == {OUTCOME[signum]}, lines
    assert code in EXIT[signum], err
    run = cell.flow_run()
    assert (run.state_name, run.task_counts) == ("Cancelled", {"CANCELLED": 2})
    assert_gone({int(s[-1]) for s in setups})
    cell.assert_nothing_left()


@pytest.mark.parametrize("cell", ["ray-hold"], indirect=True)
def test_sigterm_on_ray_cleans_up_every_copy_and_exits_143(cell):
    cell.wait_for("two tasks holding a copy each on two actors", two_tasks_ready, timeout=180)
    cell.proc.send_signal(signal.SIGTERM)
    code, err = cell.finish()
    lines = cell.lines()
    setups = steps(lines, "setup")
    cleanups = steps(lines, "cleanup")
    assert len(setups) == 2, lines
    assert sorted(c[-1] for c in cleanups) == sorted(s[-1] for s in setups), lines
    assert {c[1] for c in cleanups} == {"Terminated"}, lines
    assert code == 143, err
    assert cell.flow_run().state_name == "Cancelled"
    cell.assert_nothing_left()


@pytest.mark.parametrize("cell", ["hijacking-hold"], indirect=True)
def test_sigterm_is_tethers_even_when_starting_the_runner_installed_another_handler(cell):
    """The mechanism behind Ray's case, without Ray: the runner's handler would abort."""
    cell.wait_for("two tasks running", lambda lines: len(steps(lines, "ready")) == 2)
    cell.proc.send_signal(signal.SIGTERM)
    code, err = cell.finish()
    lines = cell.lines()
    assert len(steps(lines, "setup")) == 1, lines  # the flow process's own copy (threads)
    assert [c[1] for c in steps(lines, "cleanup")] == ["Terminated"], lines
    assert code == 143, err
    assert cell.flow_run().state_name == "Cancelled"


@pytest.mark.parametrize("cell", ["dask-timeout", "ray-timeout"], indirect=True)
def test_a_task_blocked_in_sleep_on_a_worker_thread_ends_timed_out_within_the_grace_period_and_its_copy_is_cleaned(cell):
    """Dask and Ray run a body on a thread, which an interrupt cannot wake from time.sleep."""
    code, err = cell.finish(timeout=180)
    lines = cell.lines()
    (ready,) = steps(lines, "ready")
    cleanups = steps(lines, "cleanup")
    assert sorted(c[-1] for c in cleanups) == sorted(s[-1] for s in steps(lines, "setup")), lines
    assert ready[-1] in {c[-1] for c in cleanups}, lines  # the copy the stuck task holds, too
    assert {c[1] for c in cleanups} == {"TaskRunTimeout"}, lines
    assert code == 1, err
    (task_run,) = cell.task_runs()
    assert task_run.state_name == "TimedOut", task_run  # type: ignore[attr-defined]
    assert "did not stop within 1 s" in task_run.state_message  # type: ignore[attr-defined]
    # 1 s of timeout and 1 s of grace, not the 60 s of the sleep
    assert task_run.end_time - task_run.start_time < 15  # type: ignore[attr-defined]
    assert cell.flow_run().state_name == "Failed"
    cell.assert_nothing_left()


@pytest.mark.parametrize("cell", ["threads-commit", "processes-commit"], indirect=True)
def test_sigterm_during_the_cleanup_of_a_successful_flow_records_it_completed_and_exits_143(cell):
    cell.wait_for("the cleanup to start", lambda lines: bool(steps(lines, "cleanup-started")))
    cell.signal_group(signal.SIGTERM)
    cell.read_stderr_until("got SIGTERM while its resources were being cleaned up")
    cell.record.with_suffix(".go").touch()  # the cleanup may finish now
    code, err = cell.finish()
    lines = cell.lines()
    setups = steps(lines, "setup")
    cleanups = steps(lines, "cleanup")
    assert sorted(c[-1] for c in cleanups) == sorted(s[-1] for s in setups), lines
    assert {c[1] for c in cleanups} == {"ok"}, lines  # committed, not rolled back
    assert code == 143, err
    run = cell.flow_run()
    assert run.state_name == "Completed", run
    assert "SIGTERM came during the cleanup, after the work was done" in (run.state_message or "")
    assert run.task_counts == {"COMPLETED": 1}
    cell.assert_nothing_left()


# -- in this process: the decision once the work is over ----------------------------------


@pytest.fixture
def body_over(monkeypatch):
    """Set once the flow body has returned and the run waits for its task runs and cleanups."""
    over = threading.Event()
    wait_for_task_runs = FlowRun.wait_for_task_runs

    def waiting(self):
        over.set()
        wait_for_task_runs(self)

    monkeypatch.setattr(FlowRun, "wait_for_task_runs", waiting)
    return over


def _interrupt_from_cleanup(reason: BaseException, body_over: threading.Event) -> None:
    """What the signal handler does once the body is over: cancel the flow run, from a
    cleanup, so that the interrupt comes exactly while that cleanup runs."""
    assert body_over.wait(10)
    ctx = current_run.get()
    assert ctx is not None
    ctx.flow_run.cancel(reason)


def test_an_interrupt_during_the_cleanup_after_the_work_changes_no_outcome_even_of_an_outer_resource(body_over):
    outcomes: list[tuple[str, str]] = []

    def recorded(name: str, interrupt: bool):
        @resource(name=name)
        def opened(*parents):
            try:
                yield name
            except BaseException as exc:
                outcomes.append((name, type(exc).__name__))
                raise
            if interrupt:
                _interrupt_from_cleanup(Terminated(), body_over)
            outcomes.append((name, "ok"))

        return opened

    outer, inner = recorded("outer", False), recorded("inner", True)

    @task
    def use(value):
        return value

    @flow
    def work():
        with outer() as o, inner(o) as i:
            return use.submit(i).result()

    # The signal still ends the process, even for a caller that asked for the state: the
    # interrupt carries the recorded state, which says the work was done.
    with pytest.raises(Terminated) as caught:
        work(return_state=True)
    state = caught.value.state
    assert outcomes == [("inner", "ok"), ("outer", "ok")]  # the outer cleanup is not failed by it
    assert state.name == "Completed" and state.result() == "inner"
    assert "SIGTERM came during the cleanup, after the work was done" in state.message
    body_over.clear()
    with pytest.raises(Terminated):
        work()


def test_the_flows_timeout_during_the_cleanup_after_the_work_leaves_it_completed_with_its_value(body_over):
    @resource
    def slow_to_close():
        yield "value"
        _interrupt_from_cleanup(FlowRunTimeout("timed out during cleanup"), body_over)

    @flow
    def work():
        with slow_to_close() as value:
            return value

    state = work(return_state=True)
    assert state.name == "Completed"
    assert "The flow's timeout came during the cleanup" in state.message
    body_over.clear()
    assert work() == "value"
