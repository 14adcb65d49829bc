"""Logging, under Prefect's module path ``prefect.logging`` (and ``prefect.logging.loggers``).

`get_run_logger` logs to the current run; `get_logger` is a plain logger under
tether's own (``tether`` or ``tether.<name>``), for code outside runs;
`disable_run_logger` turns run loggers into plain silent ones inside a block, for
testing a task's ``.fn`` without a run, as in Prefect.
"""

from tether._logging import disable_run_logger, get_logger, get_run_logger
from tether.logging import loggers as loggers  # the submodule, reachable as an attribute

__all__ = ["disable_run_logger", "get_logger", "get_run_logger"]
