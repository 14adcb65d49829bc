# Source: https://docs.prefect.io/v3/how-to-guides/workflows/run-work-concurrently (PrefectHQ/prefect docs/v3/how-to-guides/workflows/run-work-concurrently.mdx, "check each future's state")
# Adapted: the call at the end.
# Expect exit: 0
# Expect stdout:
#   Processed 3 items successfully
#   Failed to process 2 items

from typing import Any

from prefect import flow, task
from prefect.futures import wait
from prefect.states import State


@task
def process_data(item: int) -> str:
    if item < 0:
        raise ValueError(f"Cannot process negative value: {item}")
    return f"Processed {item}"


@flow
def batch_processing():
    items = [1, -2, 3, -4, 5]

    # Submit all tasks and return the futures
    futures = process_data.map(items)

    # Wait for all futures to complete concurrently
    done, not_done = wait(futures)

    # Check each future's state
    successful: list[Any] = []
    failed: list[State] = []

    for future in done:
        if future.state.is_completed():
            successful.append(future.result())
        else:
            failed.append(future.state)

    print(f"Processed {len(successful)} items successfully")
    print(f"Failed to process {len(failed)} items")

    return successful


batch_processing()
