# Source: https://docs.prefect.io/v3/advanced/caching (https://github.com/PrefectHQ/prefect/blob/ce79dd3d6cfa2b7337265498210dbc4d25bcdc98/docs/v3/advanced/caching.mdx, "Coordinate caching across multiple tasks", Prefect 3)
# Adapted: load_data prints when it runs, and the script runs the flow with fail=True, then
# with fail=False, as the page describes ("both tasks will be re-executed").
# Expect exit: 0
# Expect count: 2 loading data
# Expect output:
#   first run failed: Error! Abort!

from prefect import task, flow
from prefect.transactions import transaction


@task(cache_key_fn=lambda *args, **kwargs: "static-key-1")
def load_data():
    print("loading data")
    return "some-data"


@task(cache_key_fn=lambda *args, **kwargs: "static-key-2")
def process_data(data, fail):
    if fail:
        raise RuntimeError("Error! Abort!")

    return len(data)


@flow
def multi_task_cache(fail: bool = True):
    with transaction():
        data = load_data()
        process_data(data=data, fail=fail)


if __name__ == "__main__":
    try:
        multi_task_cache()
    except RuntimeError as exc:
        print("first run failed:", exc)
    multi_task_cache(fail=False)
