"""The recording pipeline (issue 17's figures), each against its baseline in the same run.

    python benchmarks/recording.py [--tasks 5000] [--rounds 5] [--big 100000] [--huge 1000000]
                                   [--kills 3] [--postgres URL] [--only one-shot,called,memory,processes,kill]
                                   [--before OTHER/src]

Every engine runs in a fresh process of its own, and the rounds alternate between them
(this machine is shared and noisy: ratios of medians, not single times).

1. one-shot: a fresh process runs one flow of N submitted no-op tasks, the first thing it
   does (imports aside): bare ThreadPoolExecutor(8), tether with the store off, tether with
   the store on (SQLite). Goals: on <= 2.5x bare, on/off <= 1.3x. The time with the store
   on includes opening the store; the process's exit (which writes what is still spooled)
   is timed apart.
2. called: N called no-op tasks: overhead per call over a plain call, store on (<= 15 us) and
   off, in rounds that alternate in one process (each flow's rows written after it, as in a
   one-shot process); and five flows back to back, store on, each one's rows written while
   the next runs (a long-lived process).
3. memory: --big and --huge submitted no-op tasks in one flow, store on; peak RSS of the
   whole process tree (the flow process plus any writer), every row checked in the store
   (<= 250 MB for 100,000; <= 1 GB for 1,000,000). The --huge flow waits for its tasks in
   chunks of 10,000, so the figure is the recording's, not a million futures'.
4. processes: 4 processes x N submitted no-ops into one SQLite store: nothing lost.
5. kill: a busy flow is SIGKILLed; every task run that finished at least 0.2 s before the
   kill must be Completed in the store once it is opened again, on SQLite (both writers)
   and, with --postgres, on PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.abspath(__file__)
#: The bare pool's time on 5,000 submitted no-ops on the machine issue 17's figures were measured on.
ISSUE_BARE_SECONDS = 0.031


# -- children ---------------------------------------------------------------------------


def child_one_shot(engine: str, n: int) -> None:
    if engine == "bare":

        def noop(x=None):
            return x

        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            [f.result() for f in [pool.submit(noop, i) for i in range(n)]]
        took = time.perf_counter() - start
        print(json.dumps({"took": took}), flush=True)
        return
    os.environ["TETHER_STORE"] = "on" if engine == "on" else "off"
    from tether import flow, task
    from tether.runners import ThreadPoolRunner

    @task
    def noop(x=None):
        return x

    @flow(task_runner=ThreadPoolRunner(8))
    def submitted(n: int) -> int:
        return len([f.result() for f in [noop.submit(i) for i in range(n)]])

    start = time.perf_counter()
    submitted(n)
    took = time.perf_counter() - start
    exit_start = time.perf_counter()
    import tether.store

    tether.store.disable()  # what the process's exit does: write what is left
    print(json.dumps({"took": took, "exit": time.perf_counter() - exit_start}), flush=True)


def child_called(n: int, rounds: int) -> None:
    """Rounds alternate in this one process, so that both engines meet the same machine: a flow of
    ``n`` called tasks with the store on (opened, and its earlier rows written, before the flow:
    its own rows are written after it, as a one-shot process writes them at exit), then one with
    the store off, then ``n`` plain calls. Then, as a long-lived process runs them, five flows
    back to back with the store on, each flow's rows written while the next runs."""
    import tether.store
    from tether import flow, task

    def plain(x=None):
        return x

    noop = task(plain)

    @flow
    def called(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            noop(i)
        return time.perf_counter() - start

    def plain_calls(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            plain(i)
        return time.perf_counter() - start

    def store(on: bool) -> None:
        os.environ["TETHER_STORE"] = "on" if on else "off"
        if on:
            tether.store.enable()
            tether.store.flush(600)
        else:
            tether.store.disable(600)

    store(True)
    called(200)
    per_call: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(rounds):
        base = plain_calls(n)
        for mode in ("on", "off"):
            store(mode == "on")
            per_call[mode].append((called(n) - base) / n * 1e6)
    store(True)
    back_to_back = min(called(n) for _ in range(5))
    base = min(plain_calls(n) for _ in range(5))
    tether.store.disable(600)
    print(json.dumps({
        "on": statistics.median(per_call["on"]), "off": statistics.median(per_call["off"]),
        "back_to_back": (back_to_back - base) / n * 1e6,
    }), flush=True)  # fmt: skip


def child_memory(n: int, chunk: int) -> None:
    os.environ["TETHER_STORE"] = os.environ.get("TETHER_STORE_BENCH", "on")
    from tether import flow, task
    from tether.runners import ThreadPoolRunner

    @task
    def noop(x=None):
        return x

    @flow(task_runner=ThreadPoolRunner(8))
    def many(n: int, chunk: int) -> int:
        done = 0
        for start in range(0, n, chunk):
            done += len([f.result() for f in [noop.submit(i) for i in range(start, min(start + chunk, n))]])
        return done

    start = time.perf_counter()
    many(n, chunk)
    took = time.perf_counter() - start
    import tether.store

    tether.store.flush(600)
    print(json.dumps({"took": took, "written": time.perf_counter() - start}), flush=True)
    tether.store.disable(600)


def child_kill() -> None:
    """Runs no-op tasks until killed; prints each finished task's id and end time, in batches."""
    os.environ["TETHER_STORE"] = "on"
    from tether import flow, task
    from tether.runners import ThreadPoolRunner

    @task
    def noop(x=None):
        return x

    @flow(task_runner=ThreadPoolRunner(8))
    def busy() -> None:
        print("started", flush=True)
        while True:
            futures = [noop.submit(i) for i in range(500)]
            for f in futures:
                f.wait()
            now = time.time()
            print(json.dumps([[f.task_run_id, now] for f in futures]), flush=True)

    busy()


# -- the parent -------------------------------------------------------------------------


def run_child(args: list[str], env: dict[str, str], timeout: float = 900) -> dict:
    out = subprocess.run(
        [sys.executable, HERE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def tree_peak_rss(args: list[str], env: dict[str, str], timeout: float = 1800) -> tuple[dict, float]:
    """Run a child; sample the RSS of it and its descendants; return its answer and the peak in MB."""
    import psutil

    proc = subprocess.Popen([sys.executable, HERE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    peak = flow_peak = 0
    parent = psutil.Process(proc.pid)
    done = threading.Event()
    out: dict[str, str] = {}

    def read() -> None:
        out["stdout"], out["stderr"] = proc.communicate(timeout=timeout)
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while not done.wait(0.05):
        try:
            total = parent.memory_info().rss
            flow_peak = max(flow_peak, total)
            for c in parent.children(recursive=True):
                try:
                    total += c.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            continue
        peak = max(peak, total)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out['stderr'][-3000:]}")
    answer = json.loads(out["stdout"].strip().splitlines()[-1])
    answer["flow_peak_mb"] = flow_peak / (1 << 20)
    return answer, peak / (1 << 20)


def task_counts(env: dict[str, str]) -> dict[str, dict[str, int]]:
    code = (
        "import json, tether.store as s\n"
        "st = s.open_store()\n"
        "print(json.dumps({r.id: r.task_counts for r in st.flow_runs(limit=None)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**env, "TETHER_STORE": "on"}, capture_output=True,
                         text=True, timeout=600, check=False)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def completed_ids(env: dict[str, str]) -> dict[str, str]:
    code = (
        "import json, sqlalchemy as sa, tether.store as s\n"
        "st = s.open_store()\n"
        "with st.engine.connect() as c:\n"
        "    print(json.dumps(dict(c.exec_driver_sql('SELECT id, state_type FROM task_runs').all())))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**env, "TETHER_STORE": "on"}, capture_output=True,
                         text=True, timeout=600, check=False)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def fresh_env(**extra: str) -> dict[str, str]:
    home = tempfile.mkdtemp(prefix="tether-recording-")
    env = {**os.environ, "TETHER_HOME": home, "TETHER_LOGGING_LEVEL": "WARNING", **extra}
    env.pop("TETHER_DATABASE_URL", None)
    return env


def one_shot(n: int, rounds: int, before: str | None) -> None:
    env = fresh_env()
    run_child(["--child", "one-shot", "on", str(n)], env)  # the store's file and schema exist: opening is the cost
    times: dict[str, list[float]] = {"bare": [], "off": [], "on": [], "before": []}
    exits: list[float] = []
    before_exits: list[float] = []
    engines = ("bare", "off", "on", "before") if before else ("bare", "off", "on")
    for _ in range(rounds):
        for engine in engines:
            child_env = {**env, "PYTHONPATH": before} if engine == "before" and before else env
            mode = "on" if engine == "before" else engine
            answer = run_child(["--child", "one-shot", mode, str(n)], child_env)
            times[engine].append(answer["took"])
            if engine == "on":
                exits.append(answer["exit"])
            elif engine == "before":
                before_exits.append(answer["exit"])
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"one-shot, {n} submitted no-ops, first flow of a fresh process ({rounds} rounds, medians): "
          f"bare {med['bare']:.3f} s, store off {med['off']:.3f} s, store on {med['on']:.3f} s "
          f"(then {statistics.median(exits):.3f} s to write at exit)")  # fmt: skip
    print(
        f"  store on / bare {med['on'] / med['bare']:.2f}x (goal <= 2.5x); store on / off "
        f"{med['on'] / med['off']:.2f}x (goal <= 1.3x); off / bare {med['off'] / med['bare']:.2f}x"
    )
    if before:
        print(
            f"  the code in {before}, store on: {statistics.median(times['before']):.3f} s (then "
            f"{statistics.median(before_exits):.3f} s at exit): on / bare {statistics.median(times['before']) / med['bare']:.2f}x, "
            f"on / off {statistics.median(times['before']) / med['off']:.2f}x"
        )


def called(n: int, rounds: int, before: str | None) -> None:
    env = fresh_env()
    figures: dict[str, list[dict[str, float]]] = {"now": [], "before": []}
    bare_times: list[float] = []
    for _ in range(rounds):
        bare_times.append(run_child(["--child", "one-shot", "bare", "5000"], env)["took"])
        figures["now"].append(run_child(["--child", "called", str(n), "7"], env))
        if before:
            figures["before"].append(run_child(["--child", "called", str(n), "7"], {**env, "PYTHONPATH": before}))

    def med(code: str, key: str) -> float:
        return statistics.median(answer[key] for answer in figures[code])

    def line(code: str) -> str:
        on, off = med(code, "on"), med(code, "off")
        return (
            f"store on {on:.1f} us, store off {off:.1f} us per call over a plain call: recording adds "
            f"{on - off:.1f} us ({on / off:.2f}x); long-lived, each flow's rows written while the next "
            f"runs: {med(code, 'back_to_back'):.1f} us"
        )

    bare = statistics.median(bare_times)  # as issue 17 measured it: 5,000 submitted no-ops, a fresh process
    print(
        f"called {n} no-op tasks ({rounds} processes, medians; in each, 7 rounds alternate store on "
        f"and off): {line('now')} (goal: store on <= 15 us)\n"
        f"  this machine ran the bare pool on 5,000 submitted no-ops in {bare:.3f} s, issue 17's in "
        f"{ISSUE_BARE_SECONDS} s: scaled to that machine, store on {med('now', 'on') * ISSUE_BARE_SECONDS / bare:.1f} us"
    )
    if before:
        print(f"  the code in {before}: {line('before')}")


def memory(n: int, chunk: int, goal_mb: int) -> None:
    env = fresh_env()
    answer, peak = tree_peak_rss(["--child", "memory", str(n), str(chunk)], env)
    counts = task_counts(env)
    completed = sum(c.get("COMPLETED", 0) for c in counts.values())
    print(
        f"{n} submitted no-ops in one flow, store on: {answer['took']:.1f} s, all written after "
        f"{answer['written']:.1f} s, peak RSS of the process tree {peak:.0f} MB (goal <= {goal_mb} MB; "
        f"the flow process alone {answer['flow_peak_mb']:.0f} MB); "
        f"{completed} of {n} task runs Completed in the store"
    )


def processes(count: int, n: int) -> None:
    env = fresh_env()
    start = time.perf_counter()
    children = [
        subprocess.Popen([sys.executable, HERE, "--child", "memory", str(n), str(n)], env=env, stdout=subprocess.PIPE)
        for _ in range(count)
    ]
    codes = [child.wait() for child in children]
    took = time.perf_counter() - start
    counts = task_counts(env)
    completed = sorted(c.get("COMPLETED", 0) for c in counts.values())
    print(
        f"{count} processes x {n} submitted no-ops into one SQLite store: {took:.1f} s, exit codes {codes}, "
        f"{len(counts)} flow runs with {completed} task runs Completed (goal: {count} x {n}, nothing lost)"
    )


def kill(kills: int, postgres: str | None) -> None:
    cases = [("SQLite, in-process writer", fresh_env, {"TETHER_STORE_HELPER": "never"}),
             ("SQLite, writer process", fresh_env, {"TETHER_STORE_HELPER": "always"}),
             ("SQLite, default", fresh_env, {})]  # fmt: skip
    if postgres:
        cases.append(("PostgreSQL, default", fresh_env, {"TETHER_DATABASE_URL": postgres}))
    for name, make, extra in cases:
        lost_runs = 0
        details = []
        for _ in range(kills):
            env = make()
            env.update(extra)
            schema = None
            if "TETHER_DATABASE_URL" in extra:
                env, schema = _fresh_schema(env)
            proc = subprocess.Popen([sys.executable, HERE, "--child", "kill"], env=env, stdout=subprocess.PIPE,
                                    text=True)  # fmt: skip
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "started"
            finished: list[tuple[str, float]] = []
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                finished.extend(json.loads(proc.stdout.readline()))
            import psutil

            writers = psutil.Process(proc.pid).children(recursive=True)  # the writer process, if any
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = time.time()
            proc.wait()
            psutil.wait_procs(writers, timeout=300)  # it writes what is spooled, then ends
            for line in proc.stdout:
                try:
                    finished.extend(json.loads(line))
                except ValueError:
                    break
            states = completed_ids(env)
            if schema is not None:
                _drop_schema(extra["TETHER_DATABASE_URL"], schema)  # the benchmark leaves the database as it found it
            due = [rid for rid, at in finished if at <= killed_at - 0.2]
            lost = [rid for rid in due if states.get(rid) != "COMPLETED"]
            lost_runs += bool(lost)
            details.append(f"{len(due) - len(lost)}/{len(due)}")
        print(
            f"SIGKILL, {name}: {kills - lost_runs} of {kills} runs kept every task run done 0.2 s before the "
            f"kill (kept/due: {', '.join(details)})"
        )


def _fresh_schema(env: dict[str, str]) -> tuple[dict[str, str], str]:
    """A schema of the benchmark's own in the given PostgreSQL database, and the env that uses it."""
    import uuid

    import sqlalchemy as sa

    base = env["TETHER_DATABASE_URL"]
    schema = f"tether_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    admin.dispose()
    return {**env, "TETHER_DATABASE_URL": f"{base}?options=-csearch_path%3D{schema}"}, schema


def _drop_schema(base: str, schema: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "one-shot":
            child_one_shot(rest[0], int(rest[1]))
        elif kind == "called":
            child_called(int(rest[0]), int(rest[1]))
        elif kind == "memory":
            child_memory(int(rest[0]), int(rest[1]))
        elif kind == "kill":
            child_kill()
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--huge", type=int, default=1_000_000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--postgres", help="a PostgreSQL URL for the kill test (a schema is made in it)")
    parser.add_argument("--only", default="one-shot,called,memory,processes,kill")
    parser.add_argument("--before", help="a src directory of another tether, measured alongside (PYTHONPATH)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if "one-shot" in only:
        one_shot(args.tasks, args.rounds, args.before)
    if "called" in only:
        called(args.tasks, args.rounds, args.before)
    if "memory" in only:
        memory(args.big, args.big, 250)
        if args.huge:
            memory(args.huge, 10_000, 1024)
    if "processes" in only:
        processes(4, args.tasks)
    if "kill" in only:
        kill(args.kills, args.postgres)


if __name__ == "__main__":
    main()
