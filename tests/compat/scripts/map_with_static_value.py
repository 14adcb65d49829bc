# Source: https://docs.prefect.io/v3/how-to-guides/workflows/run-work-concurrently (PrefectHQ/prefect docs/v3/how-to-guides/workflows/run-work-concurrently.mdx, ".map with a static value")
# Adapted: the result is printed.
# Expect exit: 0
# Expect stdout:
#   [6, 7, 8]

from prefect import flow, task

@task
def add_together(x, y):
    return x + y

@flow
def sum_it(numbers: list[int], static_value: int):
    futures = add_together.map(numbers, static_value)
    return futures.result()

resulting_sum = sum_it([1, 2, 3], 5)
assert resulting_sum == [6, 7, 8]
print(resulting_sum)
