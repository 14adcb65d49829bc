# Source: https://docs.prefect.io/v3/concepts/task-runners (PrefectHQ/prefect docs/v3/concepts/task-runners.mdx, "futures as arguments")
# Adapted: nothing.
# Expect exit: 0
# Expect stdout:
#   <class 'str'>
#   Hello Marvin!

from prefect import flow, task


@task
def say_hello(name):
    return f"Hello {name}!"


@task
def print_result(result):
    print(type(result))
    print(result)


@flow(name="hello-flow")
def hello_world():
    future = say_hello.submit("Marvin")
    print_result.submit(future).wait()


hello_world()
