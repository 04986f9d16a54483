"""The viewer end to end, in a real browser: ``codetape ui`` serves a store of real
recordings, and headless Debian Chromium (driven by Playwright) goes from the runs list
to a failed run, replays its failing step, then replays it with a fix, and opens the
comparison with each replay.

Recorded strings carry XSS payloads. For the whole session no dialog may open, and at
every stop the DOM must hold no ``<script>`` with the payload, no ``onerror`` attribute
and no ``javascript:`` link, while the payloads show on the page as text.

Screenshots of every stop, and the server's log, go to ``artifacts/browser/``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import codetape
from codetape.sandbox import NoIsolationWarning

from .browser import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    HAVE_PLAYWRIGHT,
    WAIT_MS,
    codetape_ui,
    fresh_shots,
)

if TYPE_CHECKING:
    from playwright.sync_api import Dialog, Locator, Page

if HAVE_PLAYWRIGHT:  # else the `chromium` fixture skips, or fails under CI=true
    from playwright.sync_api import expect, sync_playwright

pytestmark = [pytest.mark.browser, pytest.mark.slow]


SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
LINK = "[x](javascript:alert(1))"
PAYLOADS = (SCRIPT, IMG, LINK)

PAYLOAD_STEP = f"note = {SCRIPT!r}\nw = lookup({IMG!r})\nprint({LINK!r})\nprint(note, w['city'])"
FAILING_STEP = "note = note + '!'\nz = [1, 2]\nprint(z[5])"
FIXED_STEP = FAILING_STEP.replace("z[5]", "z[1]")


def lookup(city: str) -> dict[str, Any]:
    return {"city": city, "temp": 21}


@codetape.code_action
def _execute(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(code, "<code action>", "exec"), namespace)


def _weather_bot(started: list[str]) -> None:
    """An agent that fails: a local-sandbox step with the payloads in its code, output
    and variables, then a failing step, then it gives up."""
    with codetape.run("weather-bot", task=f"weather for {SCRIPT}") as run:
        started.append(run.id)
        with pytest.warns(NoIsolationWarning):
            sandbox = codetape.Sandbox(backend="local", tools=[lookup])
        with sandbox:
            assert sandbox.run(PAYLOAD_STEP).status == "ok"
            assert sandbox.run(FAILING_STEP).status == "error"
        raise RuntimeError("the agent gave up")


def _record_store() -> str:
    """The failed run, then two observed runs, so that it is not the first row. Its id."""
    failed: list[str] = []
    with pytest.raises(RuntimeError, match="gave up"):
        _weather_bot(failed)
    for name in ("orders", "billing"):
        namespace: dict[str, Any] = {}
        with codetape.run(name, task="observed"):
            _execute("total = 1 + 1", namespace)
    return failed[0]


@pytest.fixture
def server(home: Path) -> Iterator[tuple[str, str]]:
    """``codetape ui --allow-local-exec`` on a free loopback port, serving the recorded
    store: the link it prints (with its token) and the failed run's id. Stopped at the
    end (terminate, then kill)."""
    failed = _record_store()
    fresh_shots(ARTIFACTS)
    with codetape_ui(home, ARTIFACTS, "--allow-local-exec") as link:
        yield link, failed


# -- page helpers ----------------------------------------------------------------


def grid_rows(grid: Locator) -> list[dict[str, str]]:
    """The rows an ``st.dataframe`` shows. Glide data grid draws on a canvas, and keeps
    the visible cells in an accessible table inside it: read them from there."""
    rows: list[dict[str, str]] = grid.locator("canvas table").evaluate(
        """table => {
            const head = [...table.querySelectorAll("thead th")].map(th => th.textContent);
            return [...table.querySelectorAll("tbody tr")].map(tr => Object.fromEntries(
                [...tr.querySelectorAll("td")].map((td, i) => [head[i], td.textContent])));
        }"""
    )
    return rows


def grid_with(page: Page, text: str, cell: str = "td") -> Locator:
    """The dataframe with a cell (``th``: a column) that says ``text``, once drawn."""
    grid = page.get_by_test_id("stDataFrame").filter(
        has=page.locator(f"canvas {cell}", has_text=re.compile(f"^{re.escape(text)}$"))
    )
    expect(grid).to_have_count(1, timeout=WAIT_MS)
    expect(grid.locator("canvas").first).to_be_visible(timeout=WAIT_MS)
    return grid


def code_block(page: Page | Locator, text: str) -> Locator:
    """The code block (``st.code``) holding ``text``: it must be on screen."""
    block = page.get_by_test_id("stCode").filter(has_text=text).first
    expect(block).to_be_visible(timeout=WAIT_MS)
    return block


def step_expander(page: Page, index: int) -> Locator:
    return page.get_by_test_id("stExpander").filter(
        has=page.locator("summary", has_text=f"Step {index} ·")
    )


def assert_inert(page: Page, dialogs: list[str]) -> None:
    """No dialog opened so far, and no payload became markup: no script with it, no
    onerror attribute, no image from it, no javascript: link."""
    assert dialogs == []
    scripts = page.locator("script").evaluate_all(
        "els => els.filter(e => e.textContent.includes('alert(1)')).length"
    )
    assert scripts == 0
    assert page.locator("[onerror]").count() == 0
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("a[href^='javascript:' i]").count() == 0


def shot(page: Page, name: str) -> None:
    """A screenshot of the whole page. Streamlit scrolls an inner container, not the
    document, so the viewport is made as tall as the content for the picture."""
    size = page.viewport_size
    assert size is not None
    height = page.get_by_test_id("stMain").evaluate("main => main.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height)})
    page.wait_for_timeout(500)  # the grids redraw their canvases at the new size
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    page.set_viewport_size(size)


# -- the test --------------------------------------------------------------------


def test_runs_list_to_failed_run_replay_and_compare_in_chromium(
    chromium: Path, server: tuple[str, str]
) -> None:
    link, failed = server
    prefix = failed[:12]
    dialogs: list[str] = []
    page_errors: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)

            def dismiss(dialog: Dialog) -> None:
                dialogs.append(f"{dialog.type}: {dialog.message}")
                dialog.dismiss()

            page.on("dialog", dismiss)
            page.on("pageerror", lambda e: page_errors.append(str(e)))

            # 1. The runs list, opened with the link `codetape ui` printed: the failed
            # run's row, with its status and task.
            page.goto(link)
            expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("3 runs · page 1 of 1")).to_be_visible(timeout=WAIT_MS)
            runs = grid_with(page, prefix)
            rows = grid_rows(runs)
            row = [r["run"] for r in rows].index(prefix)
            assert row > 0  # newer runs are listed above it
            assert rows[row]["status"] == "error"
            assert rows[row]["failed"] == "1"
            assert rows[row]["task"] == f"weather for {SCRIPT}"
            assert_inert(page, dialogs)
            shot(page, "01-runs")

            # 2. Select its row (the checkbox column: a click on a cell only focuses
            # the cell) and land on its Run page.
            canvas = runs.get_by_test_id("data-grid-canvas")
            box = canvas.bounding_box()
            assert box is not None
            header = runs.locator("canvas").nth(1).bounding_box()  # the header's canvas
            assert header is not None
            row_height = (box["height"] - header["height"]) / len(rows)
            page.mouse.click(box["x"] + 16, box["y"] + header["height"] + (row + 0.5) * row_height)
            expect(page.get_by_role("heading", name="Run", exact=True)).to_be_visible(
                timeout=WAIT_MS
            )
            expect(page).to_have_url(re.compile(rf"/run\?run={failed}"), timeout=WAIT_MS)
            run_facts = grid_rows(grid_with(page, failed))
            facts = {r["field"]: r["value"] for r in run_facts}
            assert facts["run"] == failed
            assert facts["status"] == "error"
            assert facts["error"] == "RuntimeError: the agent gave up"
            assert facts["steps"] == "2 (1 failed)"
            assert facts["task"] == f"weather for {SCRIPT}"
            assert facts["sandbox"].startswith("local, no isolation")
            # The failing step is open: its code, the failing line and the error.
            failing = step_expander(page, 1)
            expect(failing.locator("summary")).to_contain_text("✗ Step 1 · error")
            code_block(failing, "print(z[5])")
            expect(
                failing.get_by_text("Failing line: line 3 (from the traceback).")
            ).to_be_visible()
            code_block(failing, "IndexError: list index out of range")
            # The step with the payloads: its code and output show them as text.
            payload_step = step_expander(page, 0)
            payload_step.locator("summary").click()
            code_block(payload_step, f"note = {SCRIPT!r}")
            code_block(payload_step, f"w = lookup({IMG!r})")
            code_block(payload_step, f"{LINK} {SCRIPT} {IMG}")  # its stdout, two lines
            payload_step.get_by_role("tab", name="Variables").click()
            variables = grid_rows(grid_with(page, "note"))
            assert {"name": "note", "after": repr(SCRIPT)}.items() <= next(
                r for r in variables if r["name"] == "note"
            ).items()
            payload_step.get_by_role("tab", name="Code and output").click()
            assert_inert(page, dialogs)
            shot(page, "02-run")

            # 3. Replay the failing step: it reproduces, in place.
            failing.get_by_role("button", name="Replay this step").click()
            expect(
                failing.get_by_text("Reproduced: the replay matches the recording.")
            ).to_be_visible(timeout=WAIT_MS)
            expect(
                failing.get_by_text("Replayed with the local backend: no isolation.")
            ).to_be_visible()
            compare = failing.get_by_role("link", name="Compare the run with its replay")
            expect(compare).to_be_visible()
            first_href = compare.get_attribute("href")
            assert first_href is not None
            assert f"a={failed}" in first_href
            assert_inert(page, dialogs)
            shot(page, "03-replayed")

            # 3b. Replay from the payload step to the end: one verdict per step.
            payload_step.get_by_role("button", name="Replay from here", exact=True).click()
            expect(
                payload_step.get_by_text("Reproduced: all 2 steps from step 0 match the recording.")
            ).to_be_visible(timeout=WAIT_MS)
            verdicts = grid_rows(grid_with(page, "reason or first difference", "th"))
            assert [(r["step"], r["verdict"]) for r in verdicts] == [
                ("0", "reproduced"),
                ("1", "reproduced"),
            ]
            expect(payload_step.get_by_role("link", name="Open the replay run")).to_be_visible()
            assert_inert(page, dialogs)
            shot(page, "03b-replayed-from-here")

            # 4. The comparison with the replay: step 1 of A against the replay's step.
            compare.click()
            expect(page.get_by_role("heading", name="Compare runs")).to_be_visible(timeout=WAIT_MS)
            expect(page).to_have_url(re.compile(rf"/compare\?a={failed}&b=[0-9a-f]+"))
            expect(
                page.get_by_text("B replays step 1 of A: only that step of A is compared.")
            ).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("The runs match step by step.")).to_be_visible()
            pairs = grid_rows(grid_with(page, "same"))
            assert [(r["step a"], r["status a"], r["status b"], r["same"]) for r in pairs] == [
                ("1", "error", "error", "same")
            ]
            assert pairs[0]["first divergence"] == ""
            both = grid_rows(grid_with(page, prefix))
            assert both[0]["run"] == prefix
            assert both[1]["replay of"] == f"{prefix} step 1"
            assert_inert(page, dialogs)
            shot(page, "04-compare-replay")

            # 5. Back to the step, edit it (the fix) and replay: it diverges.
            page.get_by_role("link", name="Open step 1 of A").click()
            expect(page).to_have_url(re.compile(rf"/run\?run={failed}&step=1"), timeout=WAIT_MS)
            failing = step_expander(page, 1)
            failing.get_by_role("button", name="Edit and replay").click()
            editor = failing.get_by_label("Code to run on the step's recorded input")
            expect(editor).to_have_value(FAILING_STEP, timeout=WAIT_MS)
            editor.fill(FIXED_STEP)
            editor.press("Control+Enter")  # commits the text area's value
            failing.get_by_role("button", name="Replay with this code").click()
            expect(
                failing.get_by_text("Diverged: the replay differs from the recording.")
            ).to_be_visible(timeout=WAIT_MS)
            expect(failing.get_by_text("note: the code was edited")).to_be_visible()
            differences = grid_rows(grid_with(page, "recorded", "th"))
            assert {"status", "stdout"} <= {r["field"] for r in differences}
            fixed = failing.get_by_role("link", name="Compare the run with its replay")
            expect(fixed).to_have_count(2)
            hrefs = [fixed.nth(k).get_attribute("href") for k in range(2)]
            [new] = [k for k, href in enumerate(hrefs) if href != first_href]
            assert_inert(page, dialogs)
            shot(page, "05-edited-replay")

            # 6. The comparison with the fixed replay: the first divergence is marked.
            fixed.nth(new).click()
            expect(
                page.get_by_text("First divergence: step 1 of A ↔ step 0 of B (pair 0).")
            ).to_be_visible(timeout=WAIT_MS)
            pairs = grid_rows(grid_with(page, "◀ here"))
            assert [(r["status a"], r["status b"], r["same"], r["first divergence"])
                    for r in pairs] == [("error", "ok", "differs", "◀ here")]  # fmt: skip
            code_block(page, "-print(z[5])")
            code_block(page, "+print(z[1])")
            assert_inert(page, dialogs)
            shot(page, "06-compare-fixed")
            assert len(context.pages) == 1  # nothing opened a window
            # The listener does catch dialogs: the "none fired" checks above mean it.
            page.evaluate("alert('probe')")
            assert dialogs == ["alert: probe"]
        except BaseException:
            with contextlib.suppress(Exception):
                page.screenshot(path=ARTIFACTS / "failure.png")
            raise
        finally:
            browser.close()

    assert page_errors == []
