"""A flow on the local Ray that RayRunner starts itself, for test_runners_ray.py.

    python ray_own_cluster_flow.py RECORD_FILE RAY_TEMP_DIR

The flow process appends ``flow PID PGID SID`` to RECORD_FILE, then runs one task that
appends ``task PID PGID SID`` (the Ray worker's) and blocks until the test kills the flow
process. Ray keeps its files under RAY_TEMP_DIR (init_kwargs' ``_temp_dir``), so the test
can look there for what Ray wrote.
"""

from __future__ import annotations

import os
import sys
import time

from tether import flow, task
from tether.runners import RayRunner

BLOCK_SECONDS = 300.0  # far longer than the test waits: the flow process is killed first


def note(record: str, kind: str) -> None:
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {os.getpid()} {os.getpgid(0)} {os.getsid(0)}\n".encode())
    finally:
        os.close(fd)


@task
def report_and_block(record: str) -> None:
    note(record, "task")
    deadline = time.monotonic() + BLOCK_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.05)


@flow
def own_cluster(record: str) -> None:
    note(record, "flow")
    report_and_block.submit(record).result()


if __name__ == "__main__":
    record, temp_dir = sys.argv[1:3]
    runner = RayRunner(init_kwargs={"num_cpus": 1, "_temp_dir": temp_dir}, workers=1)
    own_cluster.with_options(task_runner=runner)(record)
