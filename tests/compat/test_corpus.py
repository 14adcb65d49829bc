"""The compatibility corpus: real Prefect 2/3 scripts, run unchanged but for the import.

Each file in ``scripts/`` is a script from Prefect's public docs or examples (its header
names the page and the repository path, and says what was adapted: a network call
replaced by a local stand-in, a sleep shortened, a call the page describes in prose
written out). The test swaps ``prefect`` for ``tether`` in its imports, runs it in a
subprocess with its own ``TETHER_HOME``, and compares with what the source documents:

    # Expect exit: 0                 the exit status (default 0)
    # Expect stdout:                 these lines are exactly the standard output
    #   Hello Marvin!
    # Expect output:                 each fragment appears in stdout or stderr (any order;
    #   Processed 3 items            log lines go to stderr)
    # Expect count: 2 Saying hello   the fragment appears exactly 2 times in stdout + stderr

``pending/`` holds scripts that do not pass yet, each with the reason in its header; they
are not run. The scripts run in parallel (a small pool of subprocesses) from a
module-scoped fixture, so the corpus costs about its slowest script.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"
TIMEOUT = 120  # one script; on a loaded machine a script's interpreter start alone takes seconds

# The first test that uses `outcomes` waits for the whole corpus.
pytestmark = pytest.mark.timeout(900)


def swap_imports(source: str) -> str:
    """The script with Prefect's imports pointing at tether (what a user changes)."""
    source = re.sub(r"\bprefect_(?:dask|ray)(?:\.task_runners)?\b", "tether.task_runners", source)
    source = re.sub(r"^(\s*)from prefect(\.[\w.]+)? import", r"\1from tether\2 import", source, flags=re.MULTILINE)
    # ``import prefect`` / ``import prefect.runtime``: the name ``prefect`` still means the package.
    source = re.sub(r"^(\s*)import prefect\b(\.[\w.]+)?(\s+as\s+\w+)?", _swap_import, source, flags=re.MULTILINE)
    return source


def _swap_import(match: re.Match[str]) -> str:
    indent, submodule, alias = match.group(1), match.group(2) or "", match.group(3)
    if alias:
        return f"{indent}import tether{submodule}{alias}"
    return f"{indent}import tether{submodule}; import tether as prefect" if submodule else f"{indent}import tether as prefect"


@dataclass
class Expectation:
    exit: int
    stdout: list[str] | None
    fragments: list[str]
    counts: dict[str, int]


def expectation_of(source: str) -> Expectation:
    exit_code, stdout, fragments, block = 0, None, [], None
    counts: dict[str, int] = {}
    for line in source.splitlines():
        if not line.startswith("#"):
            if block is not None and line.strip():
                break  # the header is over
            continue
        text = line[1:].strip()
        if text.startswith("Expect exit:"):
            exit_code, block = int(text.split(":", 1)[1]), None
        elif text.startswith("Expect count:"):
            number, fragment = text.split(":", 1)[1].strip().split(" ", 1)
            counts[fragment], block = int(number), None
        elif text == "Expect stdout:":
            stdout, block = [], "stdout"
        elif text == "Expect output:":
            block = "output"
        elif block is not None and line.startswith("#   "):
            (stdout if block == "stdout" else fragments).append(line[4:])  # type: ignore[union-attr]
        else:
            block = None if not line.startswith("#   ") else block
    return Expectation(exit_code, stdout, fragments, counts)


@dataclass
class Outcome:
    exit: int | str
    stdout: str
    stderr: str
    seconds: float


def run_script(path: Path, workdir: Path) -> Outcome:
    workdir.mkdir(parents=True)
    script = workdir / path.name
    script.write_text(swap_imports(path.read_text()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(TETHER_HOME=str(workdir / "home"), PYTHONUNBUFFERED="1", TETHER_LOGGING_LEVEL="INFO")
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, script.name], cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        return Outcome("timeout", exc.stdout or "", exc.stderr or "", TIMEOUT)
    return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - start)


SCRIPT_PATHS = sorted(SCRIPTS.glob("*.py"))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("compat")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {p.name: pool.submit(run_script, p, root / p.stem) for p in SCRIPT_PATHS}
        return {name: f.result() for name, f in futures.items()}


def test_every_script_names_its_source():
    for path in [*SCRIPT_PATHS, *sorted((SCRIPTS.parent / "pending").glob("*.py"))]:
        header = path.read_text().split("\n\n", 1)[0]
        assert "# Source:" in header, f"{path.name} does not say where it comes from"


def test_the_import_swap():
    assert swap_imports("from prefect import flow\nimport prefect\nfrom prefect.futures import wait\n") == (
        "from tether import flow\nimport tether as prefect\nfrom tether.futures import wait\n"
    )
    assert swap_imports("from prefect_dask.task_runners import DaskTaskRunner") == "from tether.task_runners import DaskTaskRunner"
    assert swap_imports("    from prefect.runtime import flow_run") == "    from tether.runtime import flow_run"
    assert swap_imports("import prefect.runtime\n") == "import tether.runtime; import tether as prefect\n"
    assert swap_imports("import prefect.runtime as rt\n") == "import tether.runtime as rt\n"


@pytest.mark.parametrize("path", SCRIPT_PATHS, ids=lambda p: p.stem)
def test_script_runs_as_its_source_documents(path, outcomes):
    expected = expectation_of(path.read_text())
    got = outcomes[path.name]
    story = f"exit {got.exit} after {got.seconds:.1f} s\n--- stdout\n{got.stdout[-3000:]}\n--- stderr\n{got.stderr[-3000:]}"
    assert got.exit == expected.exit, story
    if expected.stdout is not None:
        assert got.stdout.splitlines() == expected.stdout, story
    missing = [f for f in expected.fragments if f not in got.stdout + got.stderr]
    assert not missing, f"missing {missing}\n{story}"
    for fragment, times in expected.counts.items():
        assert (got.stdout + got.stderr).count(fragment) == times, f"{fragment!r} is not there {times} times\n{story}"
