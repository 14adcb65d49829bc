# Source: https://docs.prefect.io/v3/concepts/tasks (PrefectHQ/prefect docs/v3/concepts/tasks.mdx, "futures inside dataclasses are resolved")
# Adapted: nothing. The page: the future in adjusted_rate is resolved before the task runs,
# so the task sees 100.0.
# Expect exit: 0
# Expect output:
#   adjusted_rate = 100.0

from dataclasses import dataclass

from prefect import flow, task

init_count = 0


@dataclass
class Pipeline:
    base_rate: float
    adjusted_rate: float = None

    def __post_init__(self):
        global init_count
        init_count += 1
        if self.adjusted_rate is None:
            self.adjusted_rate = self.base_rate * 1.5


@task
def get_rate() -> float:
    return 100.0


@task(log_prints=True)
def run_pipeline(pipeline: Pipeline):
    print(f"init_count inside task = {init_count}")
    print(f"adjusted_rate = {pipeline.adjusted_rate}")


@flow(log_prints=True)
def my_flow():
    rate_future = get_rate.submit()
    pipeline = Pipeline(base_rate=42.0, adjusted_rate=rate_future)
    print(f"init_count before task = {init_count}")
    run_pipeline(pipeline)


my_flow()
