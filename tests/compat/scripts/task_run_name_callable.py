# Source: https://docs.prefect.io/v3/how-to-guides/workflows/write-and-run (PrefectHQ/prefect docs/v3/how-to-guides/workflows/write-and-run.mdx, "task_run_name as a function")
# Adapted: the task prints its run's name (the page: "a name like Thursday-is-a-lovely-day").
# Expect exit: 0
# Expect output:
#   -is-a-lovely-day

import datetime
from prefect import flow, task
from prefect.runtime import task_run

def generate_task_name():
    date = datetime.datetime.now(datetime.timezone.utc)
    return f"{date:%A}-is-a-lovely-day"

@task(name="My Example Task",
      description="An example task for the docs.",
      task_run_name=generate_task_name)
def my_task(name):
    print(task_run.name)

@flow
def my_flow():
    # creates a run with a name like "Thursday-is-a-lovely-day"
    my_task(name="marvin")

if __name__ == "__main__":
    my_flow()  
