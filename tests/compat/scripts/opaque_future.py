# Source: https://docs.prefect.io/v3/concepts/tasks (PrefectHQ/prefect docs/v3/concepts/tasks.mdx, "resolve without traversal using opaque")
# Adapted: nothing. The future is resolved, and the Pipeline it gives is passed as it is.
# Expect exit: 0
# Expect output:
#   adjusted_rate = 150.0

from dataclasses import dataclass

from prefect import flow, task
from prefect.utilities.annotations import opaque


@dataclass
class Pipeline:
    base_rate: float
    adjusted_rate: float = 0.0

    def __post_init__(self):
        self.adjusted_rate = self.base_rate * 1.5


@task
def build_pipeline(base_rate: float) -> Pipeline:
    return Pipeline(base_rate=base_rate)


@task(log_prints=True)
def run_pipeline(pipeline: Pipeline):
    print(f"adjusted_rate = {pipeline.adjusted_rate}")


@flow
def my_flow():
    future = build_pipeline.submit(100.0)
    run_pipeline.submit(opaque(future))


my_flow()
