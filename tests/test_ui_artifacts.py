"""The dashboard's run page over HTTP: a run's artifacts below the timeline, for a real flow run by ``tether run``
in its own process and a real ``tether ui`` process: markdown rendered on the server with its HTML escaped, a
table as a table, a link only where it is http(s), a progress as a bar. The browser's view is test_ui_browser.py's.
"""

from __future__ import annotations

import html
import re

import pytest

pytest.importorskip("starlette", reason="the dashboard needs the ui extra: pip install -e '.[ui]'")

from _artifact_flows import ARTIFACT_FLOWS
from _dashboard import dashboard, env_for, run_flow
from tether.ui._artifacts import markdown_html, safe_href


@pytest.fixture
def env(tmp_path):
    return env_for(tmp_path / "home")


@pytest.fixture
def flows(tmp_path):
    script = tmp_path / "artifact_flows.py"
    script.write_text(ARTIFACT_FLOWS)
    return script




def artifact_elements(page: str) -> list[tuple[str, str]]:
    return re.findall(r'<div class="artifact a-\w+" data-artifact-key="([^"]*)" data-artifact-type="(\w+)"', page)


def test_the_run_page_shows_the_artifacts_below_the_timeline_and_escapes_what_they_say(env, flows):
    run_id = run_flow(env, flows, "report")
    with dashboard(env) as ui:
        status, page, headers = ui.get(f"/runs/{run_id}")
        task_run_id = re.search(r'from task run <a href="/tasks/(\w+)">summarize</a>', page).group(1)
        task_status, task_page, _ = ui.get(f"/tasks/{task_run_id}")
    assert status == 200 and task_status == 200
    # The task run's own page has the one artifact it made.
    assert artifact_elements(task_page) == [("sales-table", "table")]
    assert re.findall(r"<td>(\w+)</td>", _element(task_page, "sales-table")) == ["EU", "3", "US", "5"]
    assert artifact_elements(page) == [("sales-report", "markdown"), ("sales-table", "table"),
                                       ("dash-link", "link"), ("bad-link", "link"), ("load-progress", "progress")]
    assert page.index('<div class="timeline-box">') < page.index("<h2>Artifacts</h2>") < page.index("<h2>Parameters")
    report = _element(page, "sales-report")
    # Markdown rendered on the server: a heading, strong text, a list, a link...
    assert "<h1>Weekly sales</h1>" in report and "<strong>3 %</strong>" in report
    assert "<li>EU</li>" in report and '<a href="https://example.com/dash">the dashboard</a>' in report
    # ... and the HTML in it shown as text: no script element reaches the page.
    assert "&lt;script&gt;document.title = &quot;owned&quot;; window.owned = 1;&lt;/script&gt;" in report
    assert "<script>document.title" not in page
    assert "The weekly summary" in report
    table = _element(page, "sales-table")
    assert re.findall(r"<th>(\w+)</th>", table) == ["region", "sales"]
    assert re.findall(r"<td>(\w+)</td>", table) == ["EU", "3", "US", "5"]
    assert re.search(r'from task run <a href="/tasks/\w+">summarize</a>', table)
    assert '<a href="https://example.com/dash" rel="noopener noreferrer nofollow">Dashboard</a>' in _element(
        page, "dash-link")
    bad = _element(page, "bad-link")
    assert "href=" not in bad.split("</h3>", 1)[1] and "javascript:alert(1)" in html.unescape(bad)
    progress = _element(page, "load-progress")
    assert '<progress max="100" value="75.00">' in progress and "75%" in progress
    assert "default-src 'self'" in headers["content-security-policy"]  # nothing inline runs, even if it got in


def _element(page: str, key: str) -> str:
    start = page.index(f'data-artifact-key="{key}"')
    end = page.find('<div class="artifact ', start)
    return page[start:end if end != -1 else page.index("</section>", start)]


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://example.com/a?b=1", True), ("http://example.com", True), ("/runs/abc", True),
        ("report.html#part", True), ("//example.com/x", True),
        ("javascript:alert(1)", False), ("JaVaScRiPt:alert(1)", False), (" javascript:alert(1)", False),
        ("java\tscript:alert(1)", False), ("java\nscript:alert(1)", False), ("\x01javascript:alert(1)", False),
        ("data:text/html,<script>alert(1)</script>", False), ("vbscript:msgbox(1)", False),
        ("file:///etc/passwd", False), ("mailto:a@b.c", False),
    ],
)
def test_only_http_https_and_relative_addresses_are_linked(url, kept):
    assert (safe_href(url) is not None) is kept


def test_markdown_keeps_its_formatting_and_none_of_its_html():
    out = str(markdown_html(
        "## Part\n\n1. one\n2. `<b>code</b>`\n\n<img src=x onerror=alert(1)>\n\n"
        '[bad](javascript:alert(1)) [ok](https://example.com "a\\" onmouseover=\\"alert(1)") ![pic](https://e.com/p.png)'
    ))
    assert "<h2>Part</h2>" in out and "<ol>" in out and "<code>&lt;b&gt;code&lt;/b&gt;</code>" in out
    assert "<img" not in out and "&lt;img src=x onerror=alert(1)&gt;" in out
    assert 'href="javascript' not in out and "[bad](javascript:alert(1))" in out
    assert '<a href="https://example.com" title="a&quot; onmouseover=&quot;alert(1)">ok</a>' in out
    assert '<a href="https://e.com/p.png">pic</a>' in out  # an image is a link: nothing is loaded from elsewhere
