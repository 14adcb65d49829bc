# Source: https://docs-2.prefect.io/latest/guides/dask-ray-task-runners/ (https://github.com/PrefectHQ/prefect/blob/8d5ba454aadfca9dee4aa81b9e3465f64c38dcac/docs/guides/dask-ray-task-runners.md, SequentialTaskRunner, Prefect 2)
# Adapted: nothing. Sequential: each greeting in the order submitted.
# Expect exit: 0
# Expect stdout:
#   hello arthur
#   goodbye arthur
#   hello trillian
#   goodbye trillian
#   hello ford
#   goodbye ford
#   hello marvin
#   goodbye marvin

from prefect import flow, task
from prefect.task_runners import SequentialTaskRunner

@task
def say_hello(name):
    print(f"hello {name}")

@task
def say_goodbye(name):
    print(f"goodbye {name}")

@flow(task_runner=SequentialTaskRunner())
def greetings(names):
    for name in names:
        say_hello.submit(name)
        say_goodbye.submit(name)

if __name__ == "__main__":
    greetings(["arthur", "trillian", "ford", "marvin"])
