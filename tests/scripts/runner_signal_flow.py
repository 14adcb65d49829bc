"""A flow whose resource copies live on a runner's workers, for the signal tests of runners.

Usage: ``runner_signal_flow.py RUNNER MODE RECORD``; RUNNER is ``threads``, ``processes``,
``dask``, ``ray`` or ``hijacking`` (threads, but starting the runner installs a SIGTERM
handler that aborts the process, as ``ray.init`` installs one that exits). The resource appends one line per step to the file RECORD, each
ending with the process id that ran it:

- ``setup <pid>``, ``cleanup <outcome> <pid>`` (outcome ``ok`` or the error's type name);
- ``ready <i> <pid>`` when task ``i`` runs with its copy open.

MODE:

- ``hold``: two tasks hold a copy each, on two workers, until they are interrupted;
- ``timeout``: one task with ``timeout_seconds=1`` sleeps in ``time.sleep(60)``;
- ``commit``: one task succeeds; the cleanup writes ``cleanup-started <pid>``, then
  waits until the file RECORD.go exists, so a test can signal the flow during cleanup.
"""

import os
import signal
import sys
import time
from pathlib import Path

from tether import flow, resource, task
from tether.runners import DaskRunner, ProcessPoolRunner, RayRunner, ThreadPoolRunner

RUNNER, MODE, RECORD = sys.argv[1], sys.argv[2], Path(sys.argv[3])


def note(line: str) -> None:
    with RECORD.open("a") as f:  # one write per line: the workers append to the same file
        f.write(f"{line} {os.getpid()}\n")


@resource
def held():
    note("setup")
    try:
        yield "conn"
    except BaseException as exc:
        note(f"cleanup {type(exc).__name__}")
        raise
    if MODE == "commit":
        note("cleanup-started")
        go = RECORD.with_suffix(".go")
        while not go.exists():
            time.sleep(0.01)
    note("cleanup ok")


@task
def hold(conn, i):
    note(f"ready {i}")
    while True:  # interruptible: the interrupt lands between two sleeps
        time.sleep(0.01)


@task(timeout_seconds=1)
def sleeper(conn):
    note("ready 0")
    time.sleep(60)


@task
def quick(conn):
    note("ready 0")
    return 1


class HijackingRunner(ThreadPoolRunner):
    """A runner whose start, like ``ray.init``, replaces the process's SIGTERM handler."""

    def start(self):
        super().start()
        signal.signal(signal.SIGTERM, lambda signum, frame: os.abort())

    def duplicate(self):
        return HijackingRunner(self.max_workers)


def make_runner():
    if RUNNER == "hijacking":
        return HijackingRunner(2)
    if RUNNER == "threads":
        return ThreadPoolRunner(2)
    if RUNNER == "processes":
        return ProcessPoolRunner(2)
    if RUNNER == "dask":
        return DaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1})
    return RayRunner(init_kwargs={"num_cpus": 2}, workers=2)


@flow(task_runner=make_runner())
def signalled():
    with held() as conn:
        if MODE == "hold":
            futures = [hold.submit(conn, i) for i in range(2)]
        elif MODE == "timeout":
            futures = [sleeper.submit(conn)]
        else:
            futures = [quick.submit(conn)]
    return [f.result() for f in futures]


if __name__ == "__main__":
    print("started", flush=True)
    signalled()
