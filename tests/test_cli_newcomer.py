"""The ``tether`` command as a new user meets it (issue #16): exit codes on signals, typed
parameters, messages for bad input, and ``tether runs show`` at 80 columns.

Every test runs the real entry point in a subprocess on a store of its own (``TETHER_HOME``
in ``tmp_path``). Signals are sent once the task wrote its marker file, never after a sleep.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

_SCRIPT = Path(sys.executable).with_name("tether")
TETHER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tether.cli"]


@pytest.fixture
def env(tmp_path):
    values = {**os.environ, "TETHER_HOME": str(tmp_path / "home"), "TETHER_LOGGING_LEVEL": "WARNING"}
    values.pop("TETHER_DATABASE_URL", None)
    values.pop("TETHER_STORE", None)
    return values


def tether(env, *args, cwd=None, expect=0):
    done = subprocess.run([*TETHER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == expect, f"tether {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def run_id_of(done: subprocess.CompletedProcess[str]) -> str:
    """The flow run's id, from tether run's closing line: ``Flow run 'name' (ID) ...``."""
    (found,) = set(re.findall(r"^Flow run '[^']*' \(([0-9a-f]{32})\)", done.stdout + done.stderr, re.MULTILINE))
    return found


SLEEPER = textwrap.dedent(
    """
    import time
    from pathlib import Path
    from tether import flow, task

    @task
    def sleepy(marker: str) -> int:
        Path(marker).write_text("started")
        time.sleep(60)
        return 1

    @flow
    def main(marker: str):
        return sleepy.submit(marker).result()
    """
)


@pytest.mark.parametrize(("signum", "code", "named"), [(signal.SIGINT, 130, "Ctrl-C (SIGINT)"), (signal.SIGTERM, 143, "SIGTERM")])
def test_tether_run_exits_like_the_script_on_a_signal_and_says_it_waits_for_the_grace_period(
    tmp_path, env, signum, code, named
):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    marker = tmp_path / "started"
    env = {**env, "TETHER_INTERRUPT_GRACE_SECONDS": "1"}
    proc = subprocess.Popen([*TETHER, "run", "sleeper.py:main", "-p", f"marker={marker}"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = 120.0
        start = time.monotonic()
        while not marker.exists():  # the task is running: the signal lands in the flow's wait for it
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - start < deadline, "the task never started"
            time.sleep(0.05)  # polling for the file, not ordering by time
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, f"exited {proc.returncode}\n{stdout}\n{stderr}"
    said = stdout + stderr
    assert f"is being cancelled ({named}): waiting up to 1 s (TETHER_INTERRUPT_GRACE_SECONDS)" in said, said
    # The warning comes before the task run is abandoned at the end of the grace period.
    assert said.index("is being cancelled") < said.index("did not stop within 1 s"), said
    assert "Traceback" not in said


SLOW_CLEANUP = textwrap.dedent(
    """
    import pathlib
    import sys
    import threading

    from tether import flow, resource, task

    def flow_body_over() -> bool:
        # The main thread waits for the cleanups at the flow's end: its body is over.
        frame = sys._current_frames().get(threading.main_thread().ident)
        while frame is not None and frame.f_code.co_name != "wait_and_decide":
            frame = frame.f_back
        return frame is not None

    @resource
    def conn(marker: str):
        yield "c"
        while not flow_body_over():     # the cleanup starts as the block ends, while the body returns:
            pass                        # asked again at once (the main thread gets the GIL in between)
        print("cleaning", flush=True)   # the work is done: the test sends SIGTERM now
        sys.stdin.readline()            # until the test says the signal was sent
        pathlib.Path(marker + ".done").write_text("cleaned")

    @task
    def work(c):
        return 42

    @flow
    def main(marker: str):
        with conn(marker) as c:
            return work(c)
    """
)


def test_tether_run_exits_143_when_sigterm_comes_during_the_cleanup_of_work_that_completed(tmp_path, env):
    (tmp_path / "slow_cleanup.py").write_text(SLOW_CLEANUP)
    marker = tmp_path / "cleaning"
    proc = subprocess.Popen([*TETHER, "run", "slow_cleanup.py:main", "-p", f"marker={marker}"], cwd=tmp_path, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        before = []
        for line in proc.stdout:  # blocks until the cleanup says it runs (or the process ends)
            before.append(line)
            if line.strip() == "cleaning":
                break
        else:
            pytest.fail(f"the cleanup never started: {''.join(before)}{proc.communicate()[1]}")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate("go\n", timeout=120)
        stdout = "".join(before) + stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # As the script itself: the work completed and is recorded so, and the exit status says SIGTERM came.
    assert proc.returncode == 143, f"exited {proc.returncode}\n{stdout}\n{stderr}"
    assert (tmp_path / "cleaning.done").exists()  # the cleanup was not cut short
    said = stdout + stderr
    assert "ended Completed" in said and "SIGTERM came during the cleanup" in said, said
    assert "Traceback" not in said
    (run,) = json.loads(tether(env, "runs", "ls", "--json").stdout)
    assert run["state_type"] == "COMPLETED", run


TYPED = textwrap.dedent(
    """
    from tether import flow

    @flow
    def twice(n: int, label: str = "x", factor: float = 1.5):
        return n * 2
    """
)


def test_a_parameter_is_coerced_from_its_type_hint_and_a_bad_one_exits_2_naming_it(tmp_path, env):
    (tmp_path / "typed.py").write_text(TYPED)
    bad = tether(env, "run", "typed.py:twice", "-p", "n=abc", cwd=tmp_path, expect=2)
    assert "n:" in bad.stderr and "valid integer" in bad.stderr and "'abc'" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr and "abcabc" not in bad.stdout
    assert tether(env, "runs", "ls", "--json").stdout.strip() == "[]"  # nothing ran

    done = tether(env, "run", "typed.py:twice", "-p", 'n="21"', cwd=tmp_path)  # the JSON string "21", coerced
    assert "Result: 42" in done.stdout, done.stdout
    shown = json.loads(tether(env, "runs", "show", run_id_of(done), "--json").stdout)
    assert shown["flow_run"]["parameters"] == {"n": 21, "label": "x", "factor": 1.5}


def test_limit_set_with_a_negative_number_says_what_a_limit_is(env):
    done = tether(env, "limit", "set", "x", "-1", expect=2)
    assert "No such option" not in done.stderr
    assert "a limit is a whole number >= 0" in done.stderr and "Example: tether limit set" in done.stderr, done.stderr
    assert "whole number >= 0" in tether(env, "limit", "set", "x", "many", expect=2).stderr
    assert "No limits set." in tether(env, "limit", "ls").stdout


def test_runs_ls_with_an_unknown_state_lists_the_states_and_exits_2(env):
    done = tether(env, "runs", "ls", "--state", "bogus", expect=2)
    assert "--state bogus" in done.stderr and "completed" in done.stderr and "TimedOut" in done.stderr, done.stderr
    assert "No flow runs recorded in state 'timedout'." in tether(env, "runs", "ls", "--state", "timedout").stdout


def test_runner_ray_without_ray_says_how_to_install_it_in_one_line(tmp_path, env):
    (tmp_path / "typed.py").write_text(TYPED)
    hide = tmp_path / "no_ray"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None  # as if Ray were not installed\n")
    env = {**env, "PYTHONPATH": os.pathsep.join([str(hide), env.get("PYTHONPATH", "")])}
    done = tether(env, "run", "typed.py:twice", "-p", "n=1", "--runner", "ray", cwd=tmp_path, expect=1)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[ray]"' in lines[0] and "--runner ray" in lines[0], done.stderr
    assert tether(env, "runs", "ls", "--json").stdout.strip() == "[]"  # nothing started


RAY_FLOW = textwrap.dedent(
    """
    from tether import flow, task
    from tether.runners import RayRunner

    @task
    def one() -> int:
        return 1

    @flow(task_runner=RayRunner())
    def on_ray():
        return one.submit().result()
    """
)


def test_a_flow_that_names_ray_itself_without_ray_ends_in_one_line_too(tmp_path, env):
    (tmp_path / "on_ray.py").write_text(RAY_FLOW)
    hide = tmp_path / "no_ray"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None  # as if Ray were not installed\n")
    env = {**env, "PYTHONPATH": os.pathsep.join([str(hide), env.get("PYTHONPATH", "")])}
    done = tether(env, "run", "on_ray.py:on_ray", cwd=tmp_path, expect=1)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[ray]"' in lines[0] and "'on_ray'" in lines[0], done.stderr


ZERO = textwrap.dedent(
    """
    from tether import flow, task

    @task(tags=["frozen"], task_run_name="thaw-{i}")
    def thaw(i: int) -> int:
        return i

    @flow
    def main():
        return thaw.submit(7).result()
    """
)


def test_the_limit_zero_error_names_the_task_run(tmp_path, env):
    (tmp_path / "zero.py").write_text(ZERO)
    tether(env, "limit", "set", "frozen", "0")
    done = tether(env, "run", "zero.py:main", cwd=tmp_path, expect=1)
    said = done.stdout + done.stderr
    assert "object at 0x" not in said, said
    assert "Task run 'thaw-7' needs a slot of 'tag:frozen'" in said, said


SHOWN = textwrap.dedent(
    """
    import threading
    from tether import flow, task, resource

    GATE = threading.Event()
    tries = {"n": 0}

    @resource
    def db(name: str):
        yield name

    @task(retries=2, retry_delay_seconds=0)
    def flaky_loader(x: int) -> int:
        tries["n"] += 1
        if tries["n"] < 3:
            raise ValueError("not yet")
        return x

    @task(tags=["one-at-a-time"])
    def hold(first: bool) -> int:
        if first:
            assert GATE.wait(60)  # the other run is waiting for the slot by then
        return 1

    @task
    def add(a: int, b: int) -> int:
        return a + b

    @flow
    def shown(n: int = 3):
        with db("main") as conn:
            f = flaky_loader.submit(1)
            first = hold.submit(True)
            second = hold.submit(False)  # the slot is taken: it waits
            GATE.set()
            adds = [add.submit(i, len(conn)) for i in range(n)]
            return f.result() + first.result() + second.result() + sum(a.result() for a in adds)
    """
)


def _table_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("NAME"))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip() or lines[i].startswith("  ...")),
               len(lines))
    return lines[start:end]


def _rows(table: list[str]) -> list[str]:
    """Each row of a table as one line of words: a cell that wrapped continues on the lines below."""
    rows: list[str] = []
    for line in table[1:]:
        if line.startswith(" ") and rows:
            rows[-1] += " " + line
        else:
            rows.append(line)
    return [" ".join(row.split()) for row in rows]


def test_runs_show_at_80_columns_names_each_run_and_shows_attempts_slot_waits_and_ledger_rows(tmp_path, env):
    (tmp_path / "shown.py").write_text(SHOWN)
    tether(env, "limit", "set", "one-at-a-time", "1")
    run_id = run_id_of(tether(env, "run", "shown.py:shown", cwd=tmp_path))
    shown = tether({**env, "COLUMNS": "80"}, "runs", "show", run_id).stdout
    table = _table_lines(shown)
    assert all(len(line) <= 80 for line in shown.splitlines()), shown
    assert "…" not in "\n".join(table) and "..." not in "\n".join(table), shown
    rows = {row.split()[0]: row for row in _rows(table)}
    assert {"add-0", "add-1", "add-2", "hold-0", "hold-1", "db", "flaky_loader"} <= set(rows), shown
    assert "3 attempts" in rows["flaky_loader"], shown
    assert "slot wait" in rows["hold-1"] and "slot wait" not in rows["hold-0"], shown
    (entry,) = json.loads(tether(env, "resources", "--json").stdout)
    assert rows["db"].split()[1] == f"#{entry['id']}", shown  # as tether resources and tether reap name it
    detail = json.loads(tether(env, "runs", "show", run_id, "--json").stdout)
    ids = {t["id"][-8:] for t in detail["task_runs"]}
    assert {line.split()[1] for name, line in rows.items() if name != "db"} == ids


MANY = textwrap.dedent(
    """
    from tether import flow, task

    @task
    def step(i: int) -> int:
        if i == 209:
            raise ValueError("the last one fails")
        return i

    @flow
    def many():
        futures = [step.submit(i) for i in range(210)]
        return [f.result() for f in futures[:209]]
    """
)


def test_runs_show_past_200_rows_lists_failed_ones_first_and_the_footer_keeps_the_columns(tmp_path, env):
    (tmp_path / "many.py").write_text(MANY)
    run_id = run_id_of(tether(env, "run", "many.py:many", cwd=tmp_path, expect=1))
    shown = tether({**env, "COLUMNS": "80"}, "runs", "show", run_id).stdout
    table = _table_lines(shown)
    assert len(table) == 201, shown  # the header and 200 rows; the footer is not a row
    assert table[1].split()[:3] == ["step-209", table[1].split()[1], "Failed"], table[1]
    assert all(len(line) <= 80 for line in shown.splitlines())
    assert "…" not in "\n".join(table)
    assert f"10 more rows not shown (failed ones first (1), then in start order); all of them: tether runs show {run_id} --json" in " ".join(shown.split())


HELD = textwrap.dedent(
    """
    import time
    from pathlib import Path
    from tether import flow, task

    @task(tags=["held"])
    def holder(marker: str, release: str) -> int:
        Path(marker).write_text("holding")
        while not Path(release).exists():  # the test reads tether limit ls meanwhile
            time.sleep(0.02)
        return 1

    @flow
    def holds(marker: str, release: str):
        return holder(marker, release)
    """
)


def test_limit_ls_names_a_holder_as_a_task_run_with_the_id_runs_show_gives_it(tmp_path, env):
    (tmp_path / "held.py").write_text(HELD)
    tether(env, "limit", "set", "held", "1")
    marker, release = tmp_path / "holding", tmp_path / "release"
    proc = subprocess.Popen([*TETHER, "run", "held.py:holds", "-p", f"marker={marker}", "-p", f"release={release}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        start = time.monotonic()
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - start < 120, "the task never started"
            time.sleep(0.05)
        listed = tether({**env, "COLUMNS": "80"}, "limit", "ls").stdout
    finally:
        release.write_text("go")
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout + stderr
    lines = listed.splitlines()
    header = next(line for line in lines if "SINCE" in line)
    assert header.split()[:4] == ["TAG", "TASK", "RUN", "ID"] and " RUN " not in header.replace("TASK RUN", ""), listed
    holder_line = lines[lines.index(header) + 1].split()
    detail = json.loads(tether(env, "runs", "show", run_id_of(subprocess.CompletedProcess([], 0, stdout, stderr)),
                               "--json").stdout)
    (task_run,) = detail["task_runs"]
    assert holder_line[:3] == ["held", "holder", task_run["id"][-8:]], listed
    assert holder_line[3] == f"{detail['flow_run']['pid']}@{detail['flow_run']['host']}"


DASK = textwrap.dedent(
    """
    import os
    from tether import flow, task, resource
    from tether.runners import DaskRunner

    @resource
    def scratch():
        yield os.getpid()

    @task
    def where(conn: int, i: int) -> int:
        return conn

    @flow(task_runner=DaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1}))
    def spread():
        with scratch() as conn:
            futures = [where.submit(conn, i) for i in range(8)]
            return sorted({f.result() for f in futures})
    """
)


def test_runs_show_of_a_dask_run_says_which_worker_each_resource_copy_was_on(tmp_path, env):
    pytest.importorskip("distributed")
    (tmp_path / "spread.py").write_text(DASK)
    run_id = run_id_of(tether(env, "run", "spread.py:spread", cwd=tmp_path))
    shown = tether({**env, "COLUMNS": "80"}, "runs", "show", run_id).stdout
    rows = [row for row in _rows(_table_lines(shown)) if row.startswith("scratch ")]
    copies = json.loads(tether(env, "resources", "--json").stdout)
    assert len(rows) == len(copies) >= 1
    for entry in copies:
        (row,) = [r for r in rows if r.split()[1] == f"#{entry['id']}"]
        assert f"on worker {entry['pid']}@{entry['host']}" in row, shown
