# Source: https://docs.prefect.io/v3/how-to-guides/workflows/access-runtime-info (PrefectHQ/prefect docs/v3/how-to-guides/workflows/access-runtime-info.mdx)
# Adapted: the call and print at the end, which the page describes in prose (the run's
# name is Prefect's random one there, the flow's name here: only the rest is compared).
# Expect exit: 0
# Expect output:
#   I wish my parents had named me Marvin instead of

from prefect import flow
from prefect.runtime import flow_run


@flow
def moody_workflow(name: str):
    return f"I wish my parents had named me {name} instead of {flow_run.name}."


print(moody_workflow("Marvin"))
