"""``tether runs show``'s artifacts: what a run published (markdown, tables, links, progress, images), as text.

Each artifact is a heading line (key, type, the task run that made it, its description),
then its content, indented: a markdown or link artifact's text as written, a table's
rows as a small table, a progress's percentage with a bar, an image's URL. Long
content is cut (`TEXT_LINES`, `TABLE_ROWS`) with a line saying how to see all of it.
Text is printed as text, never as console markup. Pure rendering over `StoredArtifact`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from tether.cli._render import clock, short_id
from tether.store import StoredArtifact

#: Beyond these, an artifact's text and a table's rows are cut (``--json`` has them all).
TEXT_LINES = 20
TABLE_ROWS = 10
ARTIFACTS_SHOWN = 200
PROGRESS_WIDTH = 20


def render_artifacts(
    console: Console, run_id: str, artifacts: list[StoredArtifact], task_names: dict[str, str]
) -> None:
    """The artifacts section of ``tether runs show`` (nothing when the run published none)."""
    if not artifacts:
        return
    console.print()
    console.print(Text(f"Artifacts ({len(artifacts)})", style="bold"))
    for artifact in artifacts[:ARTIFACTS_SHOWN]:
        console.print(heading(artifact, task_names))
        if artifact.description:
            console.print(_indented(Text(artifact.description, style="italic")))
        shown = content(artifact, run_id)
        console.print(_indented(shown) if isinstance(shown, Text) else Padding(shown, (0, 0, 0, 4), expand=False))
    if len(artifacts) > ARTIFACTS_SHOWN:
        console.print(Text(f"  ... {len(artifacts) - ARTIFACTS_SHOWN} more artifacts; all of them: "
                           f"tether runs show {run_id} --json", style="dim"))


def heading(artifact: StoredArtifact, task_names: dict[str, str]) -> Text:
    by = made_by(artifact, task_names)
    return Text.assemble(
        "  ", (artifact.key or "(no key)", "bold"), "  ", (artifact.type, "cyan"), f"  {by}",
        (f"  {clock(artifact.updated)}", "dim"),
    )


def made_by(artifact: StoredArtifact, task_names: dict[str, str]) -> str:
    if artifact.task_run_id is None:
        return "from the flow run"
    name = task_names.get(artifact.task_run_id)
    ident = short_id(artifact.task_run_id)
    return f"from task run {name} ({ident})" if name else f"from task run {ident}"


def content(artifact: StoredArtifact, run_id: str) -> Text | Table:
    data = artifact.data
    if artifact.type == "progress":
        return progress_text(data)
    if artifact.type == "table":
        try:
            columns, rows = artifact.table_rows()
        except ValueError:
            return _cut_text(str(data), run_id)
        return table_of(columns, rows, run_id)
    return _cut_text("" if data is None else str(data), run_id)


def progress_text(value: Any) -> Text:
    percent = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
    percent = max(0.0, min(percent, 100.0))
    filled = round(percent / 100 * PROGRESS_WIDTH)
    return Text.assemble(("█" * filled, "cyan"), ("░" * (PROGRESS_WIDTH - filled), "dim"), f" {percent:g}%")


def table_of(columns: list[str], rows: list[list[Any]], run_id: str) -> Table | Text:
    if not columns:
        return Text("(an empty table)", style="dim")
    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for column in columns:
        table.add_column(Text(column), overflow="fold")
    for row in rows[:TABLE_ROWS]:
        table.add_row(*(Text("" if v is None else str(v)) for v in row))
    if len(rows) > TABLE_ROWS:
        table.caption = f"{len(rows) - TABLE_ROWS} more rows: tether runs show {run_id} --json"
        table.caption_justify = "left"
    return table


def _indented(text: Text) -> Text:
    """Each line of ``text`` four columns in (a line longer than the console folds, and is not padded out)."""
    return Text("\n").join(Text("    ") + line for line in text.split("\n"))


def _cut_text(text: str, run_id: str) -> Text:
    lines = text.splitlines() or [""]
    shown = Text("\n".join(lines[:TEXT_LINES]))
    if len(lines) > TEXT_LINES:
        shown.append(f"\n... {len(lines) - TEXT_LINES} more lines: tether runs show {run_id} --json", style="dim")
    return shown


def artifact_dict(artifact: StoredArtifact, task_names: dict[str, str]) -> dict[str, Any]:
    """An artifact for ``--json``: its record, with the name of the task run that made it."""
    values = dataclasses.asdict(artifact)
    values["task_run_name"] = None if artifact.task_run_id is None else task_names.get(artifact.task_run_id)
    if artifact.type == "table":
        try:
            columns, rows = artifact.table_rows()
        except ValueError:
            pass  # a table that is not one: its data is still there as stored
        else:
            values["columns"], values["rows"] = columns, rows
    return values
