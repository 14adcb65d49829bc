"""Engine overhead (issue 2's figures), measured against bare Python in the same run.

    python benchmarks/overhead.py [--tasks 5000] [--big 100000] [--store]

1. N submitted no-op tasks in a flow, then all results, against the same work on a
   bare ThreadPoolExecutor(8): ratio (goal <= 3x).
2. N called no-op tasks: overhead per call over a plain function call (goal <= 20 us).
3. --big submitted no-op tasks in one flow: peak RSS (goal <= 250 MB), in a child process.
The engine is measured with the run store off (TETHER_STORE=off); with --store, (1) and (2)
are also run with the store recording, against the store off, each in a process of its own,
and the ratio store on/off printed (issue 4's figure, goal <= 1.3x); and once more with the
store recording but never handing the writing to a writer process (TETHER_STORE_HELPER=never):
the row that says whether the writer process still earns its complexity.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("TETHER_STORE", "off")  # before tether decides whether to record
os.environ.setdefault("TETHER_LOGGING_LEVEL", "WARNING")

from tether import flow, task
from tether.runners import ThreadPoolRunner
from tether.store import flush


def noop(x=None):
    return x


noop_task = task(noop)


def bare_pool(n: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(noop, i) for i in range(n)]
        [f.result() for f in futures]
    return time.perf_counter() - start


@flow(task_runner=ThreadPoolRunner(8))
def submitted(n: int) -> int:
    futures = [noop_task.submit(i) for i in range(n)]
    return len([f.result() for f in futures])


def tether_submitted(n: int) -> float:
    start = time.perf_counter()
    submitted(n)
    return time.perf_counter() - start


@flow
def called(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        noop_task(i)
    return time.perf_counter() - start


def plain_calls(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        noop(i)
    return time.perf_counter() - start


def best(fn, n: int, repeat: int = 5) -> float:
    return min(fn(n) for _ in range(repeat))


def store_figures(n: int, rounds: int = 20) -> None:
    """Store on against store off, each in a process of its own that lives through all the
    rounds, measured in alternating rounds of three flows (this machine's noise moves both
    alike). Each flow with the store on starts on a quiet store: the process waits until
    the previous flow's records are written; each flow with the store off is followed by
    as long a pause.

    The first busy flow with the store on is timed on its own (its records are spooled, and
    written once it ended); then the steady state is measured, in which a stream that stays
    heavy is written by the writer process ("on"), or in the flow's process all along ("never":
    TETHER_STORE_HELPER=never).
    """
    env = {**os.environ, "TETHER_HOME": tempfile.mkdtemp(prefix="tether-bench-")}
    env.pop("TETHER_STORE_HELPER", None)
    children = {
        mode: subprocess.Popen([sys.executable, __file__, "--store-child", "off" if mode == "off" else "on",
                                "--tasks", str(n)], env={**env, "TETHER_STORE_HELPER": "never"} if mode == "never" else env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for mode in ("off", "on", "never")
    }  # fmt: skip

    def ask(mode: str, command: str) -> list[float]:
        child = children[mode]
        child.stdin.write(command + "\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        return [float(x) for x in child.stdout.readline().split()]  # type: ignore[union-attr]

    (first,) = ask("on", "ready")
    (first_never,) = ask("never", "ready")
    ask("off", "ready")
    times: dict[str, list[float]] = {"off": [], "on": [], "never": []}
    quiet = 0.1
    for _ in range(rounds):
        for mode in ("off", "on", "never"):
            for _ in range(3):
                took, flushed = ask(mode, "flow")
                times[mode].append(took)
                if mode != "off":
                    quiet = flushed
                else:
                    time.sleep(quiet)  # as long as the store took to write the last flow: all start alike
    called_on, called_never, called_off = ask("on", "called")[0], ask("never", "called")[0], ask("off", "called")[0]
    for child in children.values():
        child.stdin.close()  # type: ignore[union-attr]
        child.wait()
    on, off, never = min(times["on"]), min(times["off"]), min(times["never"])
    median = statistics.median(times["on"]) / statistics.median(times["off"])
    median_never = statistics.median(times["never"]) / statistics.median(times["off"])
    print(f"  submitted, with the run store recording: {on:.3f} s against {off:.3f} s off, store on/off "
          f"{on / off:.2f}x (goal <= 1.3x; medians {median:.2f}x); the first busy flow: {first:.3f} s")
    print(f"  submitted, recording with TETHER_STORE_HELPER=never (no writer process): {never:.3f} s, "
          f"on/off {never / off:.2f}x (medians {median_never:.2f}x; the writer process earns its keep while "
          f"this is above the row before); the first busy flow: {first_never:.3f} s")
    print(f"  called, with the run store recording: {called_on:.1f} us per call ({called_never:.1f} us with "
          f"TETHER_STORE_HELPER=never, {called_off:.1f} us off)")


def store_child(mode: str, n: int) -> None:
    """One side of `store_figures`: runs a flow on each request, with the store on or off."""
    os.environ["TETHER_STORE"] = mode
    tether_submitted(200)  # warm up threads and imports
    for line in sys.stdin:
        command = line.strip()
        if command == "ready":
            first = tether_submitted(n) if mode == "on" else 0.0
            flush()
            answer = f"{first}"
        elif command == "flow":
            took = tether_submitted(n)
            started = time.perf_counter()
            flush()  # written: the next flow starts on a quiet store
            answer = f"{took} {time.perf_counter() - started}"
        else:
            plain = best(plain_calls, n)
            answer = f"{(min(called(n) for _ in range(5)) - plain) / n * 1e6}"
        print(answer, flush=True)


def big_child(n: int) -> None:
    submitted(n)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--store", action="store_true", help="also measure with the run store recording")
    parser.add_argument("--child-big", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store-child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_big:
        big_child(args.child_big)
        return
    if args.store_child:
        store_child(args.store_child, args.tasks)
        return
    n = args.tasks
    tether_submitted(200)  # warm up threads and imports
    bare = best(bare_pool, n)
    ours = best(tether_submitted, n)
    print(f"submitted {n} no-op tasks: tether {ours:.3f} s, bare ThreadPoolExecutor(8) {bare:.3f} s, "
          f"ratio {ours / bare:.2f}x (goal <= 3x)")
    plain = best(plain_calls, n)
    per_call = (min(called(n) for _ in range(5)) - plain) / n * 1e6
    print(f"called {n} no-op tasks: {per_call:.1f} us overhead per call over a plain call (goal <= 20 us)")
    if args.store:
        store_figures(n)
    out = subprocess.run([sys.executable, __file__, "--child-big", str(args.big)], capture_output=True, text=True, check=False,
                         env={**os.environ, "TETHER_LOGGING_LEVEL": "WARNING"})
    if out.returncode != 0:
        print(out.stderr)
    else:
        print(f"{args.big} submitted no-op tasks in one flow: peak RSS {out.stdout.strip()} MB (goal <= 250 MB)")


if __name__ == "__main__":
    main()
