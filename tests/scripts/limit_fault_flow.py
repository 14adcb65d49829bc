"""A flow of N tasks tagged TAG whose bodies record when they enter and leave their slot.

    python limit_fault_flow.py TAG N RECORD [--hold-until FILE] [--timeout SECONDS]

Each body appends "enter PID I" and "exit PID I" to RECORD (one write with O_APPEND
each, so the lines of every process interleave in the order they happened). With
--hold-until, a body stays inside its slot until FILE exists (so a test can pause
or kill this process while its bodies hold their slots). With --timeout, the flow
times out after SECONDS (its waiting runs are withdrawn).
"""

import os
import sys
import time

from tether import flow, task
from tether.runners import ThreadPoolRunner

tag, count, record = sys.argv[1], int(sys.argv[2]), sys.argv[3]
hold_until = sys.argv[sys.argv.index("--hold-until") + 1] if "--hold-until" in sys.argv else None
timeout = float(sys.argv[sys.argv.index("--timeout") + 1]) if "--timeout" in sys.argv else None


def note(what: str, i: int) -> None:
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{what} {os.getpid()} {i}\n".encode())
    finally:
        os.close(fd)


@task(tags=[tag])
def work(i: int) -> int:
    note("enter", i)
    while hold_until is not None and not os.path.exists(hold_until):
        time.sleep(0.01)  # waits for the test's word, inside the slot
    note("exit", i)
    return i


@flow(task_runner=ThreadPoolRunner(8), timeout_seconds=timeout)
def limited() -> int:
    return sum(f.result() for f in [work.submit(i) for i in range(count)])


if __name__ == "__main__":
    print(limited(), flush=True)
