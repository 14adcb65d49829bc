"""Engine overhead (issue 2's figures), measured against bare Python in the same run.

    python benchmarks/overhead.py [--tasks 5000] [--big 100000] [--store]

1. N submitted no-op tasks in a flow, then all results, against the same work on a
   bare ThreadPoolExecutor(8): ratio (goal <= 3x).
2. N called no-op tasks: overhead per call over a plain function call (goal <= 20 us).
3. --big submitted no-op tasks in one flow: peak RSS (goal <= 250 MB), in a child process.
The engine is measured with the run store off (TETHER_STORE=off); with --store, (1) and (2)
are also run with the store recording, and the ratios store on/off printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("TETHER_STORE", "off")  # before tether decides whether to record
os.environ.setdefault("TETHER_LOGGING_LEVEL", "WARNING")

from tether import flow, task  # noqa: E402
from tether.runners import ThreadPoolRunner  # noqa: E402
from tether.store import active_store, flush  # noqa: E402


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


def store_figures(n: int, plain: float, rounds: int = 3) -> None:
    """Store on against store off, in alternating rounds (this machine's noise moves both
    alike); each flow starts on a quiet store (the previous flow's records written), and
    a flow with the store off after as long a pause.

    The first flow with the store on is timed on its own (it creates the store and starts
    the helper process); then, with the helper ready, the steady state is measured.
    """
    os.environ.setdefault("TETHER_HOME", tempfile.mkdtemp(prefix="tether-bench-"))
    os.environ["TETHER_STORE"] = "on"
    first = tether_submitted(n)
    flush()
    recorder = active_store().recorder  # type: ignore[union-attr]
    deadline = time.monotonic() + 30
    while not recorder._using_helper and time.monotonic() < deadline:  # the helper starts in about 0.5 s
        time.sleep(0.05)
    off: list[float] = []
    on: list[float] = []
    quiet = 0.1
    for _ in range(rounds):
        os.environ["TETHER_STORE"] = "off"
        for _ in range(3):
            off.append(tether_submitted(n))
            time.sleep(quiet)  # as long as the store took to write the last flow: both start alike
        os.environ["TETHER_STORE"] = "on"
        for _ in range(3):
            on.append(tether_submitted(n))
            started = time.perf_counter()
            flush()  # written: the next flow starts on a quiet store
            quiet = time.perf_counter() - started
    ratio = min(on) / min(off)
    print(f"  submitted, with the run store recording: {min(on):.3f} s against {min(off):.3f} s off, store on/off "
          f"{ratio:.2f}x (goal <= 1.3x); the first flow, creating the store: {first:.3f} s")
    stored_call = (min(called(n) for _ in range(5)) - plain) / n * 1e6
    print(f"  called, with the run store recording: {stored_call:.1f} us per call")


def big_child(n: int) -> None:
    submitted(n)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--store", action="store_true", help="also measure with the run store recording")
    parser.add_argument("--child-big", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_big:
        big_child(args.child_big)
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
        store_figures(n, plain)
    out = subprocess.run([sys.executable, __file__, "--child-big", str(args.big)], capture_output=True, text=True,
                         env={**os.environ, "TETHER_LOGGING_LEVEL": "WARNING"})
    if out.returncode != 0:
        print(out.stderr)
    else:
        print(f"{args.big} submitted no-op tasks in one flow: peak RSS {out.stdout.strip()} MB (goal <= 250 MB)")


if __name__ == "__main__":
    main()
