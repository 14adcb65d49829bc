"""``tether run FILE.py:FLOW``: import the file, find the flow, run it with a live view of its task runs.

Parses the target and the ``-p`` values and picks the runner; the run itself is the engine's,
and the live view is `tether._progress`'s.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.text import Text

import tether.runners
from tether._errors import ParameterError, Terminated
from tether._flow import FlowFunction
from tether._progress import run_with_progress
from tether.cli._main import BadInput, Failure, err, out
from tether.cli._render import short_value
from tether.store import enable, redact_text
from tether.store import flush as flush_store

RUNNERS = {"threads": "ThreadPoolRunner", "processes": "ProcessPoolRunner", "dask": "DaskRunner", "ray": "RayRunner"}
#: What a runner needs beyond tether itself: the module it imports, named for the message, and the extra.
EXTRAS = {"dask": ("distributed", "Dask's distributed scheduler"), "ray": ("ray", "Ray")}
#: The exit status of a run ended by a signal, as the shell gives a script it killed (API.md 5).
SIGNAL_EXIT = {KeyboardInterrupt: 130, Terminated: 143}


@click.command("run")
@click.argument("target", metavar="FILE.py:FLOW")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A flow parameter; VALUE is JSON if it parses, else a string; coerced to the parameter's type hint.",
)
@click.option("--runner", type=click.Choice(sorted(RUNNERS)), default=None, help="Where task bodies run.")
def run_cmd(target: str, params: tuple[str, ...], runner: str | None) -> None:
    """Run the flow FLOW defined in FILE.py, with a live view of its task runs.

    Exits 0 if it completed, 1 if not, 2 for bad input, 130 after Ctrl-C and 143 after SIGTERM.
    """
    try:
        _run(target, params, runner)
    except KeyboardInterrupt:  # before the flow run took the signal, or an async flow's loop
        sys.exit(130)


def _run(target: str, params: tuple[str, ...], runner: str | None) -> None:
    flow = load_flow(target)
    values = parse_params(params)
    try:
        flow.validate_parameters(values)  # the call validates again: here only to say it before anything runs
    except ParameterError as exc:
        raise BadInput(f"-p: {exc}") from None
    if runner is not None:
        flow = flow.with_options(task_runner=runner_named(runner))
    enable()
    try:
        state, flow_run_id = run_with_progress(lambda: flow(**values, return_state=True), out, err)
    except ImportError as exc:  # the runner's package is missing: raised as the run starts it (the body's are states)
        raise Failure(f"Flow {flow.name!r} could not start its task runner: {exc}") from None
    except (KeyboardInterrupt, Terminated) as late:
        state = getattr(late, "state", None)
        if state is None:  # not a flow run's late interrupt: it never started
            raise
        # It came during the cleanup, after the work was over: the run ended as its work did.
        flush_store()
        err.print(Text.assemble(f"Flow run {flow.name!r} ended ", (state.name, "green" if state.is_completed() else "red"),
                                f": {redact_text(state.message or '')}"))
        sys.exit(143 if isinstance(late, Terminated) else 130)
    flush_store()
    summary = f"Flow run {flow.name!r}" + (f" ({flow_run_id})" if flow_run_id else "")
    if state.is_completed():
        out.print(Text.assemble(summary + " ", ("Completed", "green"), f". Result: {short_value(state.data)}"))
        return
    err.print(Text.assemble(summary + " ended ", (state.name, "red"), f": {redact_text(state.message or '')}"))
    reason = state.data if state.is_cancelled() else None
    sys.exit(next((code for kind, code in SIGNAL_EXIT.items() if isinstance(reason, kind)), 1))


def runner_named(name: str) -> Any:
    """A new runner of the kind ``--runner`` names; one that needs a package not installed says which."""
    class_name = RUNNERS[name]
    runner_class = getattr(tether.runners, class_name, None)
    if runner_class is None:
        raise BadInput(f"--runner {name}: this version of tether has no {class_name}.")
    if name in EXTRAS:
        module, what = EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            raise Failure(
                f"--runner {name}: {class_name} needs {what}, which is not installed. "
                f'Install it from the tether checkout with: pip install -e ".[{name}]"'
            )
    return runner_class()


def load_flow(target: str) -> FlowFunction[Any]:
    """Import FILE.py and find FLOW in it (by variable name, then by flow name)."""
    file, sep, name = target.rpartition(":")
    if not sep or not file or not name:
        raise BadInput(f"{target!r} is not FILE.py:FLOW. Example: tether run flows/etl.py:main_flow")
    path = Path(file)
    if not path.is_file():
        raise BadInput(f"No such file: {file} (looked in {Path.cwd()}).")
    module = _import_file(path)
    found = getattr(module, name, None)
    if not isinstance(found, FlowFunction):
        flows = {v.name: v for v in vars(module).values() if isinstance(v, FlowFunction)}
        if name in flows:
            return flows[name]
        available = ", ".join(sorted({k for k, v in vars(module).items() if isinstance(v, FlowFunction)})) or "none"
        what = "is not a @flow" if found is not None else "is not defined"
        raise BadInput(f"{name!r} {what} in {file}. Flows in that file: {available}.")
    return found


def _import_file(path: Path) -> Any:
    stem = path.stem
    module_name = (
        stem if stem.isidentifier() and stem not in sys.modules else f"tether_run_{abs(hash(str(path.resolve())))}"
    )
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BadInput(f"Cannot import {path}: not a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any error in the user's file is reported the same way
        del sys.modules[module_name]
        err.print_exception()
        raise BadInput(f"Importing {path} failed: {type(exc).__name__}: {exc}") from None
    return module


def parse_params(params: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in params:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise BadInput(f"-p {item!r} is not NAME=VALUE. Example: -p rows=1000 -p db=mytestdb")
        try:
            values[name] = json.loads(raw)
        except ValueError:
            values[name] = raw
    return values
