# Source: https://docs.prefect.io/v3/how-to-guides/workflows/pass-inputs (PrefectHQ/prefect docs/v3/how-to-guides/workflows/pass-inputs.mdx, "type validation")
# Adapted: nothing; the page says the call "will fail with a type validation error".
# Expect exit: 1
# Expect output:
#   name
#   Input should be a valid string

from prefect import flow


@flow
def my_workflow(name: str = "World"):
    return f"Hello, {name}!"

my_workflow(name=1) # This will fail with a type validation error
