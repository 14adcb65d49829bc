# Source: https://docs.prefect.io/v3/concepts/tasks (PrefectHQ/prefect docs/v3/concepts/tasks.mdx, "quote: pass an argument as is")
# Adapted: nothing. The page: quote(pipeline) hands the task the object as it is (its
# __post_init__ is not run again), so it prints the rate computed once.
# Expect exit: 0
# Expect output:
#   adjusted_rate = 150.0

from dataclasses import dataclass

from prefect import flow, task
from prefect.utilities.annotations import quote


@dataclass
class Pipeline:
    base_rate: float
    adjusted_rate: float = 0.0

    def __post_init__(self):
        self.adjusted_rate = self.base_rate * 1.5


@task(log_prints=True)
def run_pipeline(pipeline: Pipeline):
    print(f"adjusted_rate = {pipeline.adjusted_rate}")


@flow(log_prints=True)
def my_flow():
    pipeline = Pipeline(base_rate=100.0)
    run_pipeline(quote(pipeline))


my_flow()
