# Source: https://docs.prefect.io/v3/develop/global-concurrency-limits (the "Using the concurrency context manager" example, Prefect 3)
# Adapted: the flow returns the results and the script prints them; no limit named "database" exists, so Prefect just runs.
# Expect exit: 0
# Expect stdout:
#   [3, 5, 7, 9]

from prefect import flow, task
from prefect.concurrency.sync import concurrency


@task
def process_data(x, y):
    with concurrency("database", occupy=1):
        return x + y


@flow
def my_flow():
    futures = [process_data.submit(x, y) for x, y in [(1, 2), (2, 3), (3, 4), (4, 5)]]
    return [f.result() for f in futures]


if __name__ == "__main__":
    print(my_flow())
