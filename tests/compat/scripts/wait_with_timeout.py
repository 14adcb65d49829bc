# Source: https://docs-2.prefect.io/latest/concepts/task-runners/ (https://github.com/PrefectHQ/prefect/blob/8d5ba454aadfca9dee4aa81b9e3465f64c38dcac/docs/concepts/task-runners.md, "wait", Prefect 2)
# Adapted: the page's three my_flow snippets in one flow, with the task the page defines;
# the results are printed.
# Expect exit: 0
# Expect stdout:
#   Completed
#   I'm a task!
#   I'm a task!

from prefect import flow, task


@task
def my_task():
    return "I'm a task!"


@flow
def my_flow():
    future = my_task.submit()
    result = future.result(raise_on_failure=False)
    if future.get_state().is_failed():
        # `result` is an exception! handle accordingly
        ...
    else:
        # `result` is the expected return value of our task
        ...

    state = future.get_state()
    print(state.name)

    final_state = future.wait()
    print(final_state.result())

    future = my_task.submit()
    final_state = future.wait(1)  # Wait one second max
    if final_state:
        # Take action if the task is done
        result = final_state.result()
        print(result)
    else:
        ... # Task action if the task is still running


my_flow()
