# Source: https://docs.prefect.io/v3/how-to-guides/workflows/write-and-run (PrefectHQ/prefect docs/v3/how-to-guides/workflows/write-and-run.mdx, "task_run_name")
# Adapted: the task prints its run's name (the page says "a name like hello-marvin-on-Thursday"),
# and the date is a fixed Thursday.
# Expect exit: 0
# Expect stdout:
#   hello-marvin-on-Thursday

import datetime
from prefect import flow, task
from prefect.runtime import task_run

@task(name="My Example Task", 
      description="An example task for a tutorial.",
      task_run_name="hello-{name}-on-{date:%A}")
def my_task(name, date):
    print(task_run.name)

@flow
def my_flow():
    # creates a run with a name like "hello-marvin-on-Thursday"
    my_task(name="marvin", date=datetime.datetime(2024, 1, 4, tzinfo=datetime.timezone.utc))

if __name__ == "__main__":
    my_flow()
