# Source: https://docs.prefect.io/v3/how-to-guides/workflows/custom-metadata (PrefectHQ/prefect docs/v3/how-to-guides/workflows/custom-metadata.mdx, "a function that returns the name")
# Adapted: the call at the end, which prints the run's name (from tether.runtime / prefect.runtime).
# Expect exit: 0
# Expect output:
#   -is-a-nice-day
#   Hello, Arthur!

import datetime
from prefect import flow
from prefect.runtime import flow_run


def generate_flow_run_name():
    date = datetime.datetime.now(datetime.timezone.utc)
    return f"{date:%A}-is-a-nice-day"


@flow(flow_run_name=generate_flow_run_name)
def my_workflow(name: str):
    print(flow_run.name)
    return f"Hello, {name}!"


print(my_workflow("Arthur"))
