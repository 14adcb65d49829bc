# Source: https://docs.prefect.io/v3/how-to-guides/workflows/state-change-hooks (PrefectHQ/prefect docs/v3/how-to-guides/workflows/state-change-hooks.mdx, "log from a hook")
# Adapted: the call of failing_flow() at the end.
# Expect exit: 1
# Expect output:
#   Flow failing_flow entered state Failed
#   ValueError: oops!

from prefect import flow
from prefect.logging.loggers import flow_run_logger


def my_hook(flow, flow_run, state):
    logger = flow_run_logger(flow_run, flow)
    logger.info(f"Flow {flow_run.name} entered state {state.name}")


@flow(on_failure=[my_hook])
def failing_flow():
    raise ValueError("oops!")


failing_flow()
