# Source: https://github.com/anna-geller/prefect-deployment-patterns/blob/main/__getting_started/07_parametrized_with_caching.py (a community recipe, Prefect 2)
# Adapted: the flow runs twice; the second run finds say_hi's result in the cache
# (task_input_hash, one hour), so its greeting is logged once.
# Expect exit: 0
# Expect count: 1 Hello from Prefect, World!
# Expect output:
#   The answer to the ultimate question is 42!

from datetime import timedelta
from prefect import task, flow
from prefect import get_run_logger
from prefect.tasks import task_input_hash
from typing import Any


@task(cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=1))
def say_hi(user_name: str, question: str, answer: Any) -> None:
    logger = get_run_logger()
    logger.info("Hello from Prefect, %s! 👋", user_name)
    logger.info("The answer to the %s question is %s! 🤖", question, answer)


@flow
def parametrized(
    user: str = "Marvin", question: str = "ultimate", answer: Any = 42
) -> None:
    say_hi(user, question, answer)


if __name__ == "__main__":
    parametrized(user="World")
    parametrized(user="World")
