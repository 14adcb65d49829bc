# Source: https://docs.prefect.io/v3/advanced/results (PrefectHQ/prefect docs/v3/advanced/results.mdx, "result filenames": result_storage_key)
# Adapted: the task prints when it computes, and the flow runs twice: the page's three
# results are stored under their keys ("hello-world.pickle", "hello-foo.pickle",
# "hello-bar.pickle"), so the second run finds all three.
# Expect exit: 0
# Expect count: 3 computing
# Expect stdout:
#   computing hello world
#   computing hello foo
#   computing hello bar

from prefect import flow, task


@task(result_storage_key="hello-{parameters[name]}.pickle")
def hello_world(name: str = "world"):
    print(f"computing hello {name}")
    return f"hello {name}"


@flow
def my_flow():
    hello_world()
    hello_world(name="foo")
    hello_world(name="bar")


my_flow()
my_flow()
