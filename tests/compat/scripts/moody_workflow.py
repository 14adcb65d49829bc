# Source: https://docs.prefect.io/v3/how-to-guides/workflows/access-runtime-info (PrefectHQ/prefect docs/v3/how-to-guides/workflows/access-runtime-info.mdx)
# Adapted: the call and print at the end, which the page describes in prose.
# Expect exit: 0
# Expect stdout:
#   I wish my parents had named me Marvin instead of moody_workflow.

from prefect import flow
from prefect.runtime import flow_run


@flow
def moody_workflow(name: str):
    return f"I wish my parents had named me {name} instead of {flow_run.name}."


print(moody_workflow("Marvin"))
