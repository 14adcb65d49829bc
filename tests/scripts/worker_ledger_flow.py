"""A flow whose resource copies live on two workers, for the tests of the workers' ledger.

Usage: ``worker_ledger_flow.py RUNNER MODE RECORD``; RUNNER is ``processes``, ``dask``
or ``ray``; the store is the one ``TETHER_HOME`` names. Two tasks run at once, one on
each worker, each with its worker's copy of the resource ``copy``, which remembers a
handle and has a reaper. Every step is appended to the file RECORD, one line each,
ending with the process id that took it:

- ``setup <pid>``, ``cleanup <outcome> <pid>`` (``ok`` or the error's type name);
- ``body <i> <pid>`` when task ``i`` runs with its copy open;
- ``reaped <handle pid> <pid>`` when ``tether reap`` runs the reaper.

MODE:

- ``killed``: each task kills its own worker with SIGKILL (no retries);
- ``hold``: each task waits for a file that never appears (the test kills this process);
- ``stuck``: each task (``timeout_seconds=0.5``) blocks in C, opening the FIFO
  RECORD.fifo with SIGUSR1 blocked, until the test opens its other end.
"""

import os
import signal
import sys
import threading

from tether import flow, resource, task
from tether.resources import remember
from tether.runners import DaskRunner, ProcessPoolRunner, RayRunner

# Nothing here reads sys.argv but the main guard: `tether reap` loads this file for its reaper.


def note(record, line):
    with open(record, "a") as f:  # one write per line: the workers append to the same file
        f.write(f"{line} {os.getpid()}\n")


def reap(handle):
    note(handle["record"], f"reaped {handle['pid']}")


@resource(reaper=reap)
def copy(record):
    remember({"pid": os.getpid(), "record": record})
    note(record, "setup")
    try:
        yield {"record": record}
    except BaseException as exc:
        note(record, f"cleanup {type(exc).__name__}")
        raise
    note(record, "cleanup ok")


@task
def killed(value, i):
    note(value["record"], f"body {i}")
    os.kill(os.getpid(), signal.SIGKILL)


@task
def hold(value, i):
    note(value["record"], f"body {i}")
    threading.Event().wait()


@task(timeout_seconds=0.5)
def stuck(value, i):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # no interrupt lands
    note(value["record"], f"body {i}")
    os.close(os.open(f"{value['record']}.fifo", os.O_RDONLY))  # blocked in C until the test opens the other end


def make_runner(name):
    if name == "processes":
        return ProcessPoolRunner(2)
    if name == "dask":
        return DaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1})
    return RayRunner(init_kwargs={"num_cpus": 2}, workers=2)


def main(runner_name, mode, record):
    body = {"killed": killed, "hold": hold, "stuck": stuck}[mode]

    @flow(task_runner=make_runner(runner_name))
    def two_copies():
        with copy(record) as value:
            futures = [body.submit(value, i) for i in range(2)]
        return [f.wait() for f in futures]

    return two_copies(return_state=True)


if __name__ == "__main__":
    state = main(*sys.argv[1:4])
    print(f"flow {state.name}", flush=True)
