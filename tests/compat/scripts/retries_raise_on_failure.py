# Source: https://docs.prefect.io/v3/concepts/flows (PrefectHQ/prefect docs/v3/concepts/flows.mdx, "always_succeeds_flow")
# Adapted: nothing; the page: the flow succeeds and prints "I'm fail safe!".
# Expect exit: 0
# Expect stdout:
#   I'm fail safe!

from prefect import flow, task


@task
def always_fails_task():
    raise ValueError("I fail successfully")


@task
def always_succeeds_task():
    print("I'm fail safe!")
    return "success"


@flow
def always_succeeds_flow():
    x = always_fails_task.submit().result(raise_on_failure=False)
    y = always_succeeds_task.submit(wait_for=[x])
    return y


if __name__ == "__main__":
    always_succeeds_flow()
