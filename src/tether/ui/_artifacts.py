"""The run page's artifacts: what a run published, made safe to put in the page.

An artifact's text is the user's (or whoever fed the run its data), so nothing in it
reaches the page as markup: markdown is rendered on the server by markdown-it-py
(installed with rich, which tether depends on) with raw HTML turned off, so a
``<script>`` in it is shown as text; images in markdown become links (the page loads
nothing from elsewhere); a link is kept only if it is http, https or relative
(never ``javascript:``). A table becomes columns and rows for the template to escape,
a progress a percentage for a bar. This module only prepares; it reads no store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from tether.store import StoredArtifact

#: The artifacts a run page shows (oldest first), and the rows of a table artifact.
ARTIFACT_LIMIT = 200
TABLE_ROW_LIMIT = 100
_SAFE_SCHEMES = ("http", "https")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")


def safe_href(url: str) -> str | None:
    """``url`` if a page may link to it: http, https or relative; None otherwise.

    Control characters and spaces browsers ignore inside a scheme (``java\\tscript:``) are
    taken out before the scheme is read, so they cannot hide one."""
    cleaned = re.sub(r"[\x00-\x20\x7f]+", "", url)
    match = _SCHEME.match(cleaned)
    if match is None:
        return url.strip()
    return url.strip() if match.group(1).lower() in _SAFE_SCHEMES else None


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table")
    md.disable("image")  # an image would be loaded from wherever it points: shown as a link instead
    md.validateLink = lambda url: safe_href(url) is not None  # type: ignore[method-assign]
    return md


_MD = _markdown()


def markdown_html(text: str) -> Markup:
    """``text`` as HTML: markdown's paragraphs, headings, lists, code, tables and links, raw HTML escaped."""
    return Markup(_MD.render(text))


@dataclass(frozen=True)
class ArtifactView:
    """One artifact as the run page shows it."""

    artifact: StoredArtifact
    #: The task run that made it, by name (None: the flow run made it).
    task_run_name: str | None
    #: Markdown rendered (markdown artifacts, and links that are not one plain link).
    html: Markup | None = None
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    more_rows: int = 0
    #: A progress artifact's percentage, 0 to 100.
    percent: float | None = None
    #: A link or image: its text and where it points (None when the URL is not one a page may link to).
    link_text: str | None = None
    href: str | None = None
    url: str | None = None

    @property
    def key(self) -> str:
        return self.artifact.key or ""

    @property
    def type(self) -> str:
        return self.artifact.type


def artifact_views(artifacts: list[StoredArtifact], task_names: dict[str, str]) -> list[ArtifactView]:
    """The first `ARTIFACT_LIMIT` artifacts, ready for the template; ``task_names`` by task run id."""
    return [_view(a, task_names) for a in artifacts[:ARTIFACT_LIMIT]]


def _view(artifact: StoredArtifact, task_names: dict[str, str]) -> ArtifactView:
    made_by = None
    if artifact.task_run_id is not None:
        made_by = task_names.get(artifact.task_run_id, artifact.task_run_id[-8:])
    data = artifact.data
    if artifact.type == "table":
        try:
            columns, rows = artifact.table_rows()
        except ValueError:
            return ArtifactView(artifact, made_by, html=Markup("<pre>") + escape(str(data)) + Markup("</pre>"))
        shown = [[_cell(v) for v in row] for row in rows[:TABLE_ROW_LIMIT]]
        return ArtifactView(artifact, made_by, columns=columns, rows=shown, more_rows=max(0, len(rows) - TABLE_ROW_LIMIT))
    if artifact.type == "progress":
        percent = float(data) if isinstance(data, (int, float)) and not isinstance(data, bool) else 0.0
        return ArtifactView(artifact, made_by, percent=max(0.0, min(percent, 100.0)))
    if artifact.type == "link":
        text, url = split_link(str(data))
        if url is None:
            return ArtifactView(artifact, made_by, html=markdown_html(str(data)))
        return ArtifactView(artifact, made_by, link_text=text, url=url, href=safe_href(url))
    if artifact.type == "image":
        url = str(data)
        return ArtifactView(artifact, made_by, link_text=url, url=url, href=safe_href(url))
    return ArtifactView(artifact, made_by, html=markdown_html("" if data is None else str(data)))


def split_link(markdown: str) -> tuple[str, str | None]:
    """``[text](url)``, as `create_link_artifact` keeps a link, as (text, url); (markdown, None) if it is not one."""
    text = markdown.strip()
    if not (text.startswith("[") and text.endswith(")")) or "](" not in text:
        return markdown, None
    label, _, url = text[1:-1].rpartition("](")
    return label, url


def _cell(value: Any) -> str:
    return "" if value is None else str(value)
