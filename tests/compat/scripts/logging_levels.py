# Source: https://docs.prefect.io/v3/how-to-guides/workflows/add-logging (PrefectHQ/prefect docs/v3/how-to-guides/workflows/add-logging.mdx, get_run_logger from prefect.logging)
# Adapted: the call at the end. DEBUG is below the default level, so it is not shown.
# Expect exit: 0
# Expect output:
#   INFO level log message.
#   ERROR level log message.
#   CRITICAL level log message.
#   INFO level log message from a task.
# Expect count: 0 DEBUG level log message

from prefect import flow, task
from prefect.logging import get_run_logger


@task(name="log-example-task")
def logger_task():
    # this logger instance will emit logs 
    # associated with both the flow run *and* the individual task run
    logger = get_run_logger()
    logger.info("INFO level log message from a task.")
    logger.debug("DEBUG level log message from a task.")


@flow(name="log-example-flow")
def logger_flow():
    # this logger instance will emit logs
    # associated with the flow run only
    logger = get_run_logger()
    logger.info("INFO level log message.")
    logger.debug("DEBUG level log message.")
    logger.error("ERROR level log message.")
    logger.critical("CRITICAL level log message.")

    logger_task()


logger_flow()
