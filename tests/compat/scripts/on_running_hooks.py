# Source: https://docs.prefect.io/v3/how-to-guides/workflows/state-change-hooks (PrefectHQ/prefect docs/v3/how-to-guides/workflows/state-change-hooks.mdx, "execute code when a task starts running")
# Adapted: the call of my_flow() at the end.
# Expect exit: 0
# Expect output:
#   Task my_task started at
#   Starting another_task!

from prefect import flow, task
import time

def record_start_time(task, task_run, state):
    print(f"Task {task.name} started at {time.time()}")

@task(on_running=[record_start_time])
def my_task():
    return "hello"

# Or use the decorator pattern
@task
def another_task():
    return "world"

@another_task.on_running
def log_start(task, task_run, state):
    print(f"Starting {task.name}!")

@flow
def my_flow():
    my_task()
    another_task()


my_flow()
