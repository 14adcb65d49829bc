# Source: https://docs-2.prefect.io/latest/concepts/task-runners/ (Prefect 2 docs, docs/concepts/task-runners.md, SequentialTaskRunner)
# Adapted: each floor sleeps floor/50 s instead of floor s; the call at the end.
# With the sequential runner, the floors are visited one after the other.
# Expect exit: 0
# Expect stdout:
#   elevator moving to floor 3
#   elevator stops on floor 3
#   elevator moving to floor 2
#   elevator stops on floor 2
#   elevator moving to floor 1
#   elevator stops on floor 1

import time
from prefect import flow, task
from prefect.task_runners import SequentialTaskRunner

@task
def stop_at_floor(floor):
    print(f"elevator moving to floor {floor}")
    time.sleep(floor / 50)
    print(f"elevator stops on floor {floor}")

@flow(task_runner=SequentialTaskRunner())
def glass_elevator():
    for floor in range(3, 0, -1):
        stop_at_floor.submit(floor)

glass_elevator()
