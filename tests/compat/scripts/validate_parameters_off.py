# Source: https://docs.prefect.io/v3/how-to-guides/workflows/pass-inputs (PrefectHQ/prefect docs/v3/how-to-guides/workflows/pass-inputs.mdx, "validate_parameters=False")
# Adapted: the result is printed.
# Expect exit: 0
# Expect stdout:
#   Hello, 1!

from prefect import flow


@flow(validate_parameters=False)
def my_workflow(name: str = "World"):
    return f"Hello, {name}!"

print(my_workflow(name=1))
