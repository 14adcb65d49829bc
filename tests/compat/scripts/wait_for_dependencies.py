# Source: https://docs.prefect.io/v3/how-to-guides/workflows/run-work-concurrently (PrefectHQ/prefect docs/v3/how-to-guides/workflows/run-work-concurrently.mdx, "wait_for")
# Adapted: each task prints its letter, and the flow is called; the order is the page's.
# Expect exit: 0
# Expect stdout:
#   c
#   d

from prefect import flow, task

@task
def task_a():
    pass

@task
def task_b():
    pass

@task
def task_c():
    print("c")

@task
def task_d():
    print("d")

@flow
def my_flow():
    a = task_a.submit()
    b = task_b.submit()
    # Wait for task_a and task_b to complete
    c = task_c.submit(wait_for=[a, b])
    # task_d will wait for task_c to complete
    # Note: If waiting for one task it must still be in a list.
    d = task_d(wait_for=[c])

my_flow()
