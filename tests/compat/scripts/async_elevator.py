# Source: https://docs.prefect.io/v3/how-to-guides/workflows/run-work-concurrently (PrefectHQ/prefect docs/v3/how-to-guides/workflows/run-work-concurrently.mdx, "async tasks")
# Adapted: each floor sleeps floor/20 s instead of floor s.
# Expect exit: 0
# Expect output:
#   elevator moving to floor 10
#   elevator stops on floor 1
#   elevator stops on floor 10

import asyncio

from prefect import flow, task


@task
async def stop_at_floor(floor: int):
    print(f"elevator moving to floor {floor}")
    await asyncio.sleep(floor / 20)
    print(f"elevator stops on floor {floor}")


@flow
async def elevator():
    floors = list(range(10, 0, -1))
    await asyncio.gather(*[stop_at_floor(floor) for floor in floors])


if __name__ == "__main__":
    asyncio.run(elevator())
