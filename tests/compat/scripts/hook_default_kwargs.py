# Source: https://docs-2.prefect.io/latest/concepts/states/ (https://github.com/PrefectHQ/prefect/blob/8d5ba454aadfca9dee4aa81b9e3465f64c38dcac/docs/concepts/states.md, "pass kwargs to your hooks", Prefect 2)
# Adapted: "ok" printed after the page's assert.
# Expect exit: 0
# Expect stdout:
#   ok

from prefect import flow

data = {}

def my_hook(flow, flow_run, state, my_arg="custom_value"):
    data.update(my_arg=my_arg, state=state)

@flow(on_completion=[my_hook])
def lazy_flow():
    pass

state = lazy_flow(return_state=True)

assert data == {"my_arg": "custom_value", "state": state}
print("ok")
