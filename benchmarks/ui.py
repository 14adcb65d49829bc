"""The dashboard's run page for a large run (issue #19's figure): server time to build it, and a real request.

    python benchmarks/ui.py [--tasks 100000] [--repeat 5]

Runs a real flow of ``--tasks`` no-op task runs (a log line every 100) into a
temporary TETHER_HOME, then builds the run page as the dashboard does (the
store's read, the SVG timeline, the template) ``--repeat`` times and prints the
best and the median server time, and the time of a GET through a real
``tether ui`` process, with the page's size. Goal: under a second of server time
for 100,000 task runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TETHER_HOME", tempfile.mkdtemp(prefix="tether-bench-"))  # never the user's run store
os.environ.setdefault("TETHER_LOGGING_LEVEL", "WARNING")

import tether.store
from tether import flow, get_run_logger, task
from tether.ui._app import Dashboard


@task
def noop(i: int) -> int:
    if i % 100 == 0:
        get_run_logger().info("part %s", i)
    return i


@flow
def large(n: int) -> int:
    futures = [noop.submit(i) for i in range(n)]
    return sum(f.result() for f in futures)


class _Request:
    """What the run page reads of a request."""

    def __init__(self, run_id: str) -> None:
        self.path_params = {"run_id": run_id}
        self.query_params: dict[str, str] = {}
        self.headers: dict[str, str] = {}
        self.url = type("U", (), {"path": f"/runs/{run_id}"})()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    tether.store.enable()
    started = time.perf_counter()
    state = large(args.tasks, return_state=True)
    tether.store.flush()
    print(f"recorded a flow run of {args.tasks:,} task runs in {time.perf_counter() - started:.1f} s ({state.name})")

    store = tether.store.open_store()
    try:
        run_id = store.flow_runs(limit=1)[0].id
        board = Dashboard(store)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            response = board.run(_Request(run_id))  # type: ignore[arg-type]
            times.append(time.perf_counter() - t)
        size = len(response.body)
    finally:
        store.close()
    print(f"run page, server time: best {min(times) * 1000:.0f} ms, median {statistics.median(times) * 1000:.0f} ms "
          f"({size / 1024:.0f} KiB of HTML)")

    ui = subprocess.Popen([str(Path(sys.executable).with_name("tether")), "ui", "--port", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = ui.stdout.readline().strip() if ui.stdout else ""
        for attempt in ("first", "second"):  # the first one also compiles the templates
            t = time.perf_counter()
            with urllib.request.urlopen(f"{url}runs/{run_id}", timeout=60) as page:
                body = page.read()
            print(f"GET /runs/<id> through tether ui ({attempt}): {(time.perf_counter() - t) * 1000:.0f} ms, "
                  f"{len(body) / 1024:.0f} KiB")
    finally:
        ui.terminate()
        ui.wait(timeout=15)


if __name__ == "__main__":
    main()
