# Source: github.com/griggz/griggz-prefect-collective src/sandbox/flows/_quicks/caching.py (a community recipe)
# Adapted: the flow is called twice at the end (the recipe's comments: "reruns each time
# the flow is run, but the same call within the same flow run is Cached").
# Expect exit: 0
# Expect count: 2 Saying hello
# Expect stdout:
#   hello marvin
#   hello marvin

from datetime import timedelta
from prefect import flow, task
from prefect.cache_policies import INPUTS, RUN_ID


@task(cache_policy=INPUTS + RUN_ID, cache_expiration=timedelta(days=1))
def hello_task(name_input):
    # Doing some work
    print("Saying hello")
    return "hello " + name_input


@flow(log_prints=True)
def hello_flow(name_input):
    # reruns each time the flow is run
    hello_task(name_input) 

    # but the same call within the same flow run is Cached
    return hello_task(name_input) 


if __name__ == "__main__":
    for _ in range(2):
        print(hello_flow("marvin"))
