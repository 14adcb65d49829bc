# Source: https://docs.prefect.io/v3/concepts/runtime-context (PrefectHQ/prefect docs/v3/concepts/runtime-context.mdx, "Access runtime information")
# Adapted: nothing.
# Expect exit: 0
# Expect output:
#   My name is my_task
#   I belong to deployment None
#   Flow run parameters: {'x': 1}

from prefect import flow, task
from prefect import runtime

@flow(log_prints=True)
def my_flow(x):
    print("My name is", runtime.flow_run.name)
    print("I belong to deployment", runtime.deployment.name)
    my_task(2)

@task
def my_task(y):
    print("My name is", runtime.task_run.name)
    print("Flow run parameters:", runtime.flow_run.parameters)

if __name__ == "__main__":
    my_flow(1)
