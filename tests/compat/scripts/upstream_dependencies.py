# Source: https://docs-2.prefect.io/latest/guides/specifying-upstream-dependencies/ (https://github.com/PrefectHQ/prefect/blob/8d5ba454aadfca9dee4aa81b9e3465f64c38dcac/docs/guides/specifying-upstream-dependencies.md, data dependencies, Prefect 2)
# Adapted: the call of flow_of_tasks() at the end.
# Expect exit: 0
# Expect output:
#   ['Hello from upstream!', 'Hello from upstream!']

from prefect import flow, task

@flow(log_prints=True)
def flow_of_tasks():
    upstream_result = upstream.submit()
    downstream_1_result = downstream_1.submit(upstream_result)
    downstream_2_result = downstream_2.submit(upstream_result)
    mapped_task_results = mapped_task.map([downstream_1_result, downstream_2_result])
    final_task(mapped_task_results)

@task
def upstream():
    return "Hello from upstream!"

@task
def downstream_1(input):
    return input

@task
def downstream_2(input):
    return input

@task
def mapped_task(input):
    return input

@task
def final_task(input):
    print(input)

flow_of_tasks()
