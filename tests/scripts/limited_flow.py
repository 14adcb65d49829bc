"""A flow of N tasks tagged TAG, each counting itself in a file shared by every process.

    python limited_flow.py TAG N COUNTER_FILE [--hold]

The counter file holds "running max_running done"; it is updated under an flock,
so the maximum of tasks running at once is measured across all processes.
With --hold, the first task prints "holding" and never returns (for SIGKILL tests).
"""

import fcntl
import sys
import time

from tether import flow, task
from tether.runners import ThreadPoolRunner

tag, count, counter_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
hold = "--hold" in sys.argv


def update(delta: int) -> None:
    with open(counter_path, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        running, peak, done = map(int, f.read().split())
        running += delta
        peak = max(peak, running)
        done += 1 if delta < 0 else 0
        f.seek(0)
        f.truncate()
        f.write(f"{running} {peak} {done}")


@task(tags=[tag])
def work(i: int) -> int:
    update(+1)
    if hold:
        print("holding", flush=True)
        while True:
            time.sleep(1)
    time.sleep(0.01)  # the work itself
    update(-1)
    return i


@flow(task_runner=ThreadPoolRunner(8))
def limited() -> int:
    futures = [work.submit(i) for i in range(count)]
    return sum(f.result() for f in futures)


if __name__ == "__main__":
    print(limited(), flush=True)
