"""Hand-off latency of a concurrency slot (issue 5's figure), on the run store.

    python benchmarks/limits.py [--handoffs 200]

A tag with limit 1. In-process: a flow submits N tasks of that tag at once; each
hand-off is the time from one task's body returning to the next one's starting.
Across processes: two processes each run N/2 tasks one after the other, so the
slot goes back and forth; a hand-off is timed from a task's end in one process to
the next start in the other (time.monotonic is machine-wide). Prints median and
p95. For scale: Prefect 2.x retries a waiting task every 30 s; 3.x waits an
adaptive delay capped at 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import tether.limits
from tether import flow, task
from tether.runners import ThreadPoolRunner

TAG = os.environ.setdefault("BENCH_TAG", f"bench-handoff-{uuid.uuid4().hex[:6]}")  # children inherit it
marks: list[tuple[float, float]] = []


@task(tags=[TAG])
def hold(i: int) -> None:
    start = time.monotonic()
    time.sleep(0.002)  # the work
    marks.append((start, time.monotonic()))


@flow(task_runner=ThreadPoolRunner(8))
def burst(n: int) -> None:
    for f in [hold.submit(i) for i in range(n)]:
        f.result()


@flow(task_runner=ThreadPoolRunner(2))
def one_at_a_time(n: int) -> None:
    for i in range(n):
        hold.submit(i).result()


def gaps(spans: list[tuple[float, float]]) -> list[float]:
    spans = sorted(spans)
    return [(b[0] - a[1]) * 1000 for a, b in zip(spans, spans[1:])]


def describe(label: str, values: list[float]) -> None:
    values = sorted(values)
    p95 = values[int(len(values) * 0.95) - 1]
    print(f"{label}: {len(values)} hand-offs, median {statistics.median(values):.2f} ms, p95 {p95:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--handoffs", type=int, default=200)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        one_at_a_time(args.child)
        print(json.dumps(marks))
        return
    os.environ.setdefault("TETHER_HOME", tempfile.mkdtemp(prefix="tether-bench-"))
    os.environ["TETHER_LOGGING_LEVEL"] = "WARNING"
    tether.limits.set(TAG, 1)
    try:
        burst(args.handoffs + 1)
        describe("in-process", gaps(marks))
        env = dict(os.environ)
        children = [subprocess.Popen([sys.executable, __file__, "--child", str(args.handoffs // 2 + 1)],
                                     stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
        spans = []
        for pid, child in enumerate(children):
            out, _ = child.communicate(timeout=600)
            spans += [(s, e, pid) for s, e in json.loads(out.strip().splitlines()[-1])]
        spans.sort()
        across = [(b[0] - a[1]) * 1000 for a, b in zip(spans, spans[1:]) if a[2] != b[2]]
        describe("across processes", across)
    finally:
        tether.limits.remove(TAG)


if __name__ == "__main__":
    main()
