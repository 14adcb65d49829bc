# Source: https://docs.prefect.io/v3/concepts/states (PrefectHQ/prefect docs/v3/concepts/states.mdx, "return_state=True")
# Adapted: the call of my_flow() at the end; its asserts are the page's claims.
# Expect exit: 0
# Expect stdout:
#   ok

from prefect import flow, task


@task
def add_one(x):
    return x + 1


@flow
def my_flow():
    result = add_one(1)
    assert isinstance(result, int) and result == 2

    state = add_one(1, return_state=True)
    assert state.is_completed() is True
    assert state.result() == 2


my_flow()
print("ok")
