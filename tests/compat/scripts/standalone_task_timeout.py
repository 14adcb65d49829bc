# Source: https://docs.prefect.io/v3/develop/write-tasks (https://github.com/PrefectHQ/prefect/blob/b8806662c9cd8e3d44aa71b681bf5a6fbc043821/docs/v3/develop/write-tasks.mdx, "Timeouts", Prefect 3)
# Adapted: the page defines the task; the script calls it, outside any flow (a task run of its
# own in Prefect 3), and the timeout ends it after "I will execute", as the page says.
# Expect exit: 1
# Expect output:
#   I will execute
#   TimedOut
# Expect count: 0 I will not execute

from prefect import task
import time


@task(timeout_seconds=1, log_prints=True)
def show_timeouts():
    print("I will execute")
    time.sleep(5)
    print("I will not execute")


show_timeouts()
