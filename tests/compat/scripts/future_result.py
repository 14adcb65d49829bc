# Source: https://docs.prefect.io/v3/concepts/task-runners (PrefectHQ/prefect docs/v3/concepts/task-runners.mdx, "future.result()")
# Adapted: nothing.
# Expect exit: 0
# Expect stdout:
#   42

from prefect import flow, task


@task
def my_task():
    return 42


@flow
def my_flow():
    future = my_task.submit()
    result = future.result()
    print(result)


my_flow()
