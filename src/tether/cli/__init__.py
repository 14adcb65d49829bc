"""The ``tether`` command: run a flow, and look at what the run store recorded.

    tether run FILE.py:FLOW [-p NAME=VALUE ...] [--runner threads|processes|dask|ray]
    tether runs ls [--limit N] [--state S] [--json]
    tether runs show RUN_ID [--json]
    tether resources [--orphans] [--json]
    tether reap [--dry-run] [--mark-closed ID] [--json]
    tether limit set TAG N | ls [--json] | rm TAG
    tether serve ... | deployments ls|pause|resume|run
    tether ui [--host 127.0.0.1] [--port 8787] [--allow-actions]

Exit codes: 0 success; 1 the flow did not complete, a reaper failed, or the store
cannot be used; 2 bad input (a missing file or flow, a bad ``-p`` value); 130 and
143 when ``tether run`` is interrupted by Ctrl-C or SIGTERM.

One module per command group (`_run`, `_runs`, `_resources`, `_limits`), the group
itself and its shared pieces in `_main`, the tables and timeline in `_render`.
The package only parses, calls `tether.store`'s public face and renders; it keeps no state.
"""

from tether._cli_serve import deployments_group, serve_cmd
from tether._cli_ui import ui as ui_command
from tether.cli import _limits, _resources, _run, _runs
from tether.cli._main import main

main.add_command(serve_cmd)
main.add_command(deployments_group)
main.add_command(ui_command)

# The command modules register themselves on `main` when imported.
_COMMAND_MODULES = (_limits, _resources, _run, _runs)

__all__ = ["main"]
