# Source: https://docs-2.prefect.io/latest/concepts/task-runners/ (Prefect 2 docs, docs/concepts/task-runners.md, ConcurrentTaskRunner)
# Adapted: each floor sleeps floor/20 s instead of floor s; the call at the end.
# Expect exit: 0
# Expect output:
#   elevator moving to floor 10
#   elevator stops on floor 1

import time
from prefect import flow, task
from prefect.task_runners import ConcurrentTaskRunner

@task
def stop_at_floor(floor):
    print(f"elevator moving to floor {floor}")
    time.sleep(floor / 20)
    print(f"elevator stops on floor {floor}")

@flow(task_runner=ConcurrentTaskRunner())
def glass_elevator():
    for floor in range(10, 0, -1):
        stop_at_floor.submit(floor)

glass_elevator()
