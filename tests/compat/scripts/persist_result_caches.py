# Source: https://docs.prefect.io/v3/how-to-guides/workflows/cache-workflow-steps (PrefectHQ/prefect docs/v3/how-to-guides/workflows/cache-workflow-steps.mdx, "persist_result=True")
# Adapted: the task prints when it runs, so the page's comments (which call is cached) show.
# Expect exit: 0
# Expect stdout:
#   computing 1
#   computing 2

from prefect import task, flow

@task(persist_result=True)
def add_one(x: int):
    print(f"computing {x}")
    return x + 1

@flow
def my_flow():
    add_one(1) # will not be cached
    add_one(1) # will be cached
    add_one(2) # will not be cached

if __name__ == "__main__":
    my_flow()
