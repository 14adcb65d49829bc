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
itself and its shared pieces in `_main`, ``runs show``'s timeline in `_timeline`, the shared
renderings (states, ids, times) in `_render`; this module adds the commands to `main`.
The package only parses, calls `tether.store`'s public face and renders; it keeps no state.
"""

from tether._cli_serve import deployments_group, serve_cmd
from tether._cli_ui import ui as ui_command
from tether.cli._limits import limit_group
from tether.cli._main import main
from tether.cli._resources import reap_cmd, resources_cmd
from tether.cli._run import run_cmd
from tether.cli._runs import runs

for _command in (run_cmd, runs, resources_cmd, reap_cmd, limit_group, serve_cmd, deployments_group, ui_command):
    main.add_command(_command)

__all__ = ["main"]
