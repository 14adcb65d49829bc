# Source: https://docs-2.prefect.io/latest/concepts/states/ (https://github.com/PrefectHQ/prefect/blob/8d5ba454aadfca9dee4aa81b9e3465f64c38dcac/docs/concepts/states.md, "state change hooks", Prefect 2)
# Adapted: nothing.
# Expect exit: 0
# Expect stdout:
#   Flow run succeeded!

from prefect import flow

def my_success_hook(flow, flow_run, state):
    print("Flow run succeeded!")

@flow(on_completion=[my_success_hook])
def my_flow():
    return 42

my_flow()
