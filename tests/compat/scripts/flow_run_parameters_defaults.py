# Source: https://docs-2.prefect.io/latest/concepts/flows/ (https://github.com/PrefectHQ/prefect/blob/8d5ba454aadfca9dee4aa81b9e3465f64c38dcac/docs/concepts/flows.md, flow_run_name from a function)
# Adapted: the flow is named "my-flow" (Prefect's default name for my_flow; see
# pending/flow_name_hyphens.py) and the run's name is printed. The defaults are part of
# flow_run.parameters, as in Prefect.
# Expect exit: 0
# Expect stdout:
#   my-flow-with-marvin-and-100

from prefect import flow
from prefect.runtime import flow_run

def generate_flow_run_name():
    flow_name = flow_run.flow_name

    parameters = flow_run.parameters
    name = parameters["name"]
    limit = parameters["limit"]

    return f"{flow_name}-with-{name}-and-{limit}"

@flow(name="my-flow", flow_run_name=generate_flow_run_name)
def my_flow(name: str, limit: int = 100):
    print(flow_run.name)

# creates a flow run called 'my-flow-with-marvin-and-100'
if __name__ == "__main__":
    my_flow(name="marvin")
