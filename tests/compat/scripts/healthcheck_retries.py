# Source: https://github.com/anna-geller/prefect-deployment-patterns/blob/main/__getting_started/05_flow_task_logger_retries.py (a community recipe, Prefect 2)
# Adapted: nothing.
# Expect exit: 0
# Expect output:
#   Host's network name =
#   Python version =
#   OS/Arch =

import platform
import sys

from prefect import flow, task, get_run_logger


@task(retries=2, retry_delay_seconds=20)
def log_platform_info():
    logger = get_run_logger()
    logger.info("Host's network name = %s 📶", platform.node())
    logger.info("Python version = %s 🐍", platform.python_version())
    logger.info("Platform information (instance type) = %s 🚀", platform.platform())
    logger.info("OS/Arch = %s/%s 🤖", sys.platform, platform.machine())


@flow(retries=3, retry_delay_seconds=30)
def healthcheck():
    log_platform_info()


if __name__ == "__main__":
    healthcheck()
