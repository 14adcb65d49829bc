# Source: https://docs.prefect.io/v3/develop/write-tasks (https://github.com/PrefectHQ/prefect/blob/b8806662c9cd8e3d44aa71b681bf5a6fbc043821/docs/v3/develop/write-tasks.mdx, "Asynchronous functions", Prefect 3)
# Adapted: nothing.
# Expect exit: 0
# Expect stdout:
#   Hello, I'm an async task

from prefect import task
import asyncio


@task
async def print_message():
    await asyncio.sleep(1)
    print("Hello, I'm an async task")


asyncio.run(print_message())
