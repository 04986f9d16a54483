"""The Query page in a real browser: ``codetape ui`` serves a store where an agent's
steps printed hostile strings (an ``<img onerror>``, a ``<script>``, Markdown bold and a
``javascript:`` link, each setting ``window.__pwned`` if it ever ran), and headless
Debian Chromium opens the Query page through the navigation, runs a query whose answer
holds them, and downloads it as CSV.

No dialog may open and nothing may run: the strings show in the table's cells as
literal text, ``window.__pwned`` stays undefined, the DOM holds no ``onerror``
attribute, image from the payload, script with it, ``javascript:`` link or bold text
made from it, and the CSV has them as they were recorded. A refused query shows
its reason, bad SQL DuckDB's message. Screenshots and the server's log go to
``artifacts/browser/query/``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import codetape

from .browser import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    HAVE_PLAYWRIGHT,
    WAIT_MS,
    codetape_ui,
    fresh_shots,
)
from .test_viewer_browser import (
    grid_rows,
    grid_with,
)

if TYPE_CHECKING:
    from playwright.sync_api import Dialog, Page

if HAVE_PLAYWRIGHT:
    from playwright.sync_api import expect, sync_playwright

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = ARTIFACTS / "query"
AGENT = "hostile-bot"
HOSTILE = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=1</script>",
    "**bold** and __strong__",
    "[click me](javascript:window.__pwned=1)",
    '<a href="javascript:window.__pwned=1">link</a>',
]
QUERY = (
    "SELECT step, trim(stdout_preview, chr(10)) AS printed\n"
    f"FROM steps WHERE agent = '{AGENT}'\nORDER BY step"
)


@codetape.code_action
def _execute(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(code, "<code action>", "exec"), namespace)


def _record_hostile() -> str:
    """A real run whose steps each print one hostile string."""
    namespace: dict[str, Any] = {}
    with codetape.run(AGENT, task="print what the page must not run") as run:
        for text in HOSTILE:
            _execute(f"print({text!r})", namespace)
    with codetape.run("orders", task="observed"):
        _execute("total = 1 + 1", namespace)
    return run.id


@pytest.fixture
def served(home: Path) -> Iterator[str]:
    """``codetape ui`` on a free loopback port over the recorded store: the link it
    prints. Stopped at the end (terminate, then kill)."""
    _record_hostile()
    with codetape_ui(home, fresh_shots(SHOTS)) as link:
        yield link


# -- page helpers ----------------------------------------------------------------


def assert_nothing_ran(page: Page, dialogs: list[str]) -> None:
    """No dialog, ``window.__pwned`` never set, and no markup made from the strings."""
    assert dialogs == []
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    scripts = page.locator("script").evaluate_all(
        "els => els.filter(e => e.textContent.includes('__pwned')).length"
    )
    assert scripts == 0
    assert page.locator("[onerror]").count() == 0
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("a[href^='javascript:' i]").count() == 0
    bold = page.locator("strong, b").evaluate_all(
        "els => els.filter(e => /^(bold|strong)$/.test(e.textContent)).length"
    )
    assert bold == 0


def run_query(page: Page, query: str) -> None:
    """Type ``query`` into the SQL box (Ctrl+Enter hands it to the app), then Run."""
    box = page.get_by_label("SQL")
    box.fill(query)
    box.press("Control+Enter")
    expect(box).to_have_value(query)
    page.get_by_role("button", name="Run", exact=True).click()


def shot(page: Page, name: str) -> None:
    """A screenshot of the whole page (Streamlit scrolls an inner container)."""
    size = page.viewport_size
    assert size is not None
    height = page.get_by_test_id("stMain").evaluate("main => main.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height)})
    page.wait_for_timeout(500)  # the grids redraw their canvases at the new size
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)
    page.set_viewport_size(size)


# -- the test --------------------------------------------------------------------


def test_query_answers_show_hostile_strings_as_text_in_chromium(
    chromium: Path, served: str
) -> None:
    dialogs: list[str] = []
    page_errors: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(
                viewport={"width": 1400, "height": 1000}, accept_downloads=True
            )
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)

            def dismiss(dialog: Dialog) -> None:
                dialogs.append(f"{dialog.type}: {dialog.message}")
                dialog.dismiss()

            page.on("dialog", dismiss)
            page.on("pageerror", lambda e: page_errors.append(str(e)))

            # 1. From the runs list to the Query page, through the navigation: it
            # starts from the first worked query.
            page.goto(served)
            expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=WAIT_MS)
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Query").click()
            expect(page.get_by_role("heading", name="Query")).to_be_visible(timeout=WAIT_MS)
            expect(page).to_have_url(re.compile(r"/query$"))
            expect(page.get_by_label("SQL")).to_have_value(re.compile(r"^SELECT agent"))

            # 2. A query whose answer holds the printed strings: each shows in its
            # cell exactly as printed, and nothing ran.
            run_query(page, QUERY)
            expect(page.get_by_text(f"{len(HOSTILE)} rows", exact=True)).to_be_visible()
            rows = grid_rows(grid_with(page, "printed", "th"))
            assert rows == [{"step": str(n), "printed": t} for n, t in enumerate(HOSTILE)]
            assert_nothing_ran(page, dialogs)
            shot(page, "01-answer")

            # 3. The download has every row, the strings as recorded.
            download_button = page.get_by_test_id("stDownloadButton")
            expect(download_button).to_have_count(1)
            expect(download_button.get_by_role("button")).to_have_text(
                f"Download all {len(HOSTILE)} rows as CSV"
            )
            with page.expect_download(timeout=WAIT_MS) as caught:
                download_button.get_by_role("button").click()
            download = caught.value
            assert download.suggested_filename == "codetape-query.csv"
            saved = Path(download.path())
            table = list(csv.reader(io.StringIO(saved.read_text(encoding="utf-8"))))
            assert table == [["step", "printed"], *([str(n), t] for n, t in enumerate(HOSTILE))]
            assert_nothing_ran(page, dialogs)

            # 4. A statement that writes is refused, with the reason.
            run_query(page, "DELETE FROM steps")
            error = page.get_by_test_id("stAlertContentError")
            expect(error).to_contain_text("Query refused")
            expect(error).to_contain_text("not a DELETE statement")
            expect(page.get_by_test_id("stDataFrame")).to_have_count(0)
            assert_nothing_ran(page, dialogs)
            shot(page, "02-refused")

            # 5. Bad SQL: DuckDB's message, and its LINE and caret in a code block.
            run_query(page, "SELECT agent,\nSELEC 1")
            expect(error).to_contain_text("Query failed")
            expect(error).to_contain_text('Parser Error: syntax error at or near "1"')
            expect(error.get_by_test_id("stCode")).to_contain_text("LINE 2: SELEC 1")
            shot(page, "03-bad-sql")
            assert page_errors == []
        finally:
            browser.close()

    rows_left = codetape.Store().sql(f"SELECT count(*) FROM steps WHERE agent = '{AGENT}'")
    assert rows_left.fetchall() == [(len(HOSTILE),)]
