# Source: https://docs.prefect.io/v3/how-to-guides/workflows/custom-metadata (PrefectHQ/prefect docs/v3/how-to-guides/workflows/custom-metadata.mdx, "templated run names")
# Adapted: the page says the run is named like "hello-marvin-on-Thursday"; the call at the
# end gives a Thursday and prints the run's name from an on_completion hook added with
# with_options, and the result.
# Expect exit: 0
# Expect stdout:
#   run name: hello-marvin-on-Thursday
#   I said hello to marvin on Thursday!

import datetime
from prefect import flow


@flow(flow_run_name="hello-{name}-on-{date:%A}")
def my_workflow(name: str, date: datetime.datetime):
    return f"I said hello to {name} on {date:%A}!"


named = my_workflow.with_options(on_completion=[lambda flow, flow_run, state: print("run name:", flow_run.name)])
print(named(name="marvin", date=datetime.datetime(2024, 1, 4)))
