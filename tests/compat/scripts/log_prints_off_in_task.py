# Source: https://docs.prefect.io/v3/how-to-guides/workflows/add-logging (PrefectHQ/prefect docs/v3/how-to-guides/workflows/add-logging.mdx, "log_prints=False on a task")
# Adapted: the call at the end. The task's print is not logged: it goes to stdout as is.
# Expect exit: 0
# Expect stdout:
#   not logging print statements in this task
# Expect output:
#   we're logging print statements from a flow

from prefect import task, flow

@task(log_prints=False)
def my_task():
    print("not logging print statements in this task")

@flow(log_prints=True)
def my_flow():
    print("we're logging print statements from a flow")
    my_task()

my_flow()
