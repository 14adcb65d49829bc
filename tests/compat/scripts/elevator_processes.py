# Source: https://docs.prefect.io/v3/concepts/task-runners (PrefectHQ/prefect docs/v3/concepts/task-runners.mdx, ProcessPoolTaskRunner)
# Adapted: each floor sleeps floor/20 s instead of floor s; the call at the end.
# Expect exit: 0
# Expect output:
#   elevator moving to floor 10
#   elevator stops on floor 1

from prefect import flow, task
from prefect.futures import wait
from prefect.task_runners import ProcessPoolTaskRunner
import time


@task
def stop_at_floor(floor):
    print(f"elevator moving to floor {floor}")
    time.sleep(floor / 20)
    print(f"elevator stops on floor {floor}")


@flow(task_runner=ProcessPoolTaskRunner(max_workers=3))
def elevator():
    floors = []

    for floor in range(10, 0, -1):
        floors.append(stop_at_floor.submit(floor))

    wait(floors) # wait for the sequence of futures to complete


if __name__ == "__main__":
    elevator()
