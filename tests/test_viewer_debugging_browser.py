"""Debugging in the first minute, in a real browser: ``codetape ui`` serves a store of
real recordings (``test_viewer_debugging.record``: the orders example, a step failing on
values whose previews and type names carry XSS payloads, Markdown links and a
right-to-left override, and a smolagents agent whose managed agent got a hostile task),
and headless Debian Chromium opens runs from the Runs table's link column and by
keyboard, reads the failing line's values under the error, follows a tool call to the
run it started and back to its parent's step, and watches a run being recorded grow
and end without reloading the page.

For the whole session no dialog may open; at every stop the DOM must hold no script
with the payload, no ``onerror`` attribute, no image from the payload, no
``javascript:`` link, and no bidi control character at all, while the payloads show on
the page as text (the override as the escape ``\\u202e``).

Screenshots of every stop, and the server's log, go to ``artifacts/browser/debugging/``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .browser import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    HAVE_PLAYWRIGHT,
    WAIT_MS,
    codetape_ui,
    fresh_shots,
)
from .test_viewer_browser import (
    code_block,
    grid_rows,
    grid_with,
    step_expander,
)
from .test_viewer_debugging import HOSTILE_VALUES, ORDERS_VALUES, Recorded, live_run, record
from .test_viewer_trajectory import HOSTILE_SHOWN
from .test_viewer_trajectory_browser import assert_all_inert

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Dialog, Locator, Page

if HAVE_PLAYWRIGHT:
    from playwright.sync_api import expect, sync_playwright

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = ARTIFACTS / "debugging"
STILL_RECORDING = "This run is still being recorded: the page follows it."


@pytest.fixture
def served(home: Path) -> Iterator[tuple[str, Recorded]]:
    """The viewer over the recorded store: its link, and the runs recorded."""
    recorded = record(home)
    with codetape_ui(home, fresh_shots(SHOTS)) as link:
        yield link, recorded


@contextlib.contextmanager
def browser_context(
    chromium: Path, dialogs: list[str], errors: list[str], width: int = 1400
) -> Iterator[Page]:
    """A page of a fresh headless Chromium whose dialogs are dismissed and noted in
    ``dialogs``, its page errors in ``errors``; a screenshot when the block fails.
    (A grid keeps only the columns in view in its accessible table: ``width`` makes
    room for more.)"""
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": width, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)

            def dismiss(dialog: Dialog) -> None:
                dialogs.append(f"{dialog.type}: {dialog.message}")
                dialog.dismiss()

            context.on("dialog", dismiss)
            context.on("weberror", lambda e: errors.append(str(e.error)))
            yield page
        except BaseException:
            with contextlib.suppress(Exception):
                page.screenshot(path=SHOTS / "failure.png")
            raise
        finally:
            browser.close()


# -- page helpers ----------------------------------------------------------------


def shot(page: Page, name: str) -> None:
    """A screenshot of the whole page (Streamlit scrolls an inner container)."""
    size = page.viewport_size
    assert size is not None
    height = page.get_by_test_id("stMain").evaluate("main => main.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height)})
    page.wait_for_timeout(500)  # the grids redraw their canvases at the new size
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)
    page.set_viewport_size(size)


def runs_grid(page: Page) -> Locator:
    return grid_with(page, "open", "th")


def row_of(page: Page, run_id: str) -> dict[str, str]:
    rows = grid_rows(runs_grid(page))
    [row] = [r for r in rows if r["run"] == run_id[:12]]
    return row


def row_point(page: Page, run_id: str) -> tuple[Locator, float, float]:
    """The runs grid, the left edge of its cells' canvas, and the middle of the run's
    row (the grid draws on a canvas: rows are found by their place)."""
    grid = runs_grid(page)
    rows = grid_rows(grid)
    k = [r["run"] for r in rows].index(run_id[:12])
    canvas = grid.get_by_test_id("data-grid-canvas").bounding_box()
    header = grid.locator("canvas").nth(1).bounding_box()  # the header's canvas
    assert canvas is not None
    assert header is not None
    height = (canvas["height"] - header["height"]) / len(rows)
    return grid, canvas["x"], canvas["y"] + header["height"] + (k + 0.5) * height


def link_x(page: Page, grid: Locator, left: float, y: float) -> float:
    """Where, on a row, the link column's link is: the grid shows a pointer over the
    row's box (first) and over a link (next)."""
    canvas = grid.get_by_test_id("data-grid-canvas")
    regions: list[float] = []
    pointer = False
    for x in range(int(left), int(left) + 400, 3):
        page.mouse.move(x, y)
        now = canvas.evaluate("c => getComputedStyle(c).cursor") == "pointer"
        if now and not pointer:
            regions.append(x)
        pointer = now
        if len(regions) == 2:
            return x + 6.0
    raise AssertionError(f"no link on the row: pointer regions start at {regions}")


def open_by_link(page: Page, run_id: str) -> Page:
    """Click the run's link in the runs grid: its Run page opens in a new tab."""
    grid, left, y = row_point(page, run_id)
    x = link_x(page, grid, left, y)
    context: BrowserContext = page.context
    with context.expect_page() as opened:
        page.mouse.click(x, y)
    tab = opened.value
    tab.set_default_timeout(WAIT_MS)
    expect(tab.get_by_role("heading", name="Run", exact=True)).to_be_visible(timeout=WAIT_MS)
    expect(tab).to_have_url(re.compile(rf"/run\?run={run_id}"), timeout=WAIT_MS)
    return tab


def open_by_keyboard(page: Page, run_id: str) -> None:
    """Focus a cell of the run's row (its task, far from the box and the link), then
    select the row with Shift+Space: the Run page opens in place."""
    grid, _, y = row_point(page, run_id)
    box = grid.get_by_test_id("data-grid-canvas").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] - 30, y)
    page.keyboard.press("Shift+Space")
    expect(page).to_have_url(re.compile(rf"/run\?run={run_id}"), timeout=WAIT_MS)
    expect(page.get_by_role("heading", name="Run", exact=True)).to_be_visible(timeout=WAIT_MS)


def facts(page: Page, run_id: str) -> dict[str, str]:
    return {r["field"]: r["value"] for r in grid_rows(grid_with(page, run_id))}


def eventually(what: str, check: Callable[[], bool], page: Page) -> None:
    """Wait (up to the tests' generous page wait) until ``check()`` holds, reading the
    page again as it redraws: the page must get there by itself."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not check():
        assert time.monotonic() < deadline, f"the page never showed {what}"
        page.wait_for_timeout(250)


def mark_document(page: Page) -> None:
    """Leave a mark in the document: a reload or a navigation would wipe it."""
    page.evaluate("() => { window.codetapeProbe = 'still here'; }")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("() => window.codetapeProbe") == "still here"


# -- the tests -------------------------------------------------------------------


def test_inline_values_and_nested_agents_in_chromium(
    chromium: Path, served: tuple[str, Recorded]
) -> None:
    link, runs = served
    dialogs: list[str] = []
    errors: list[str] = []
    with browser_context(chromium, dialogs, errors) as page:
        # 1. The runs list: the child run names its parent's step; every row links to
        # its Run page.
        page.goto(link)
        expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=WAIT_MS)
        rows = grid_rows(runs_grid(page))
        assert {r["run"]: r["open"] for r in rows} == {
            r[:12]: f"/run?run={r}" for r in (runs.orders, runs.hostile, runs.parent, runs.child)
        }
        assert row_of(page, runs.child)["parent"] == f"{runs.parent[:12]} step 0"
        assert row_of(page, runs.parent)["parent"] == ""
        assert_all_inert(page, dialogs)
        shot(page, "01-runs")

        # 2. The hostile run, from its link: under the error, the values its failing
        # line reads, as text.
        tab = open_by_link(page, runs.hostile)
        values = code_block(tab, "box has keys")
        for line in HOSTILE_VALUES.splitlines():
            expect(values).to_contain_text(line.strip())
        expect(values).to_contain_text(HOSTILE_SHOWN)
        assert_all_inert(tab, dialogs)
        shot(tab, "02-hostile-values")
        tab.close()

        # 3. The orders example, from the keyboard: the demo's KeyError and its values.
        open_by_keyboard(page, runs.orders)
        failing = step_expander(page, 2)
        code_block(failing, "KeyError: 'order_id'")
        values = code_block(failing, "order has keys")
        for line in ORDERS_VALUES.splitlines():
            expect(values).to_contain_text(line.strip())
        assert_all_inert(page, dialogs)
        shot(page, "03-orders-values")

        # 4. The parent run: its tool call links to the run it started.
        page.goto(link.replace("/?", f"/run?run={runs.parent}&"))
        child = page.get_by_role(
            "link", name=f"Step 0, tool call #0 started: run {runs.child[:12]}"
        )
        expect(child).to_be_visible(timeout=WAIT_MS)
        assert_all_inert(page, dialogs)
        shot(page, "04-parent")
        child.click()
        expect(page).to_have_url(re.compile(rf"/run\?run={runs.child}$"), timeout=WAIT_MS)

        # 5. The child run: its hostile task as text, and the way back to its parent.
        shown = facts(page, runs.child)
        assert f"count {HOSTILE_SHOWN}" in shown["task"]
        assert shown["parent"] == f"{runs.parent} step 0"
        assert_all_inert(page, dialogs)
        shot(page, "05-child")
        page.get_by_role(
            "link", name=f"Started by a tool call of step 0 of run {runs.parent[:12]}: open it"
        ).click()
        expect(page).to_have_url(re.compile(rf"/run\?run={runs.parent}&step=0"), timeout=WAIT_MS)

        # 6. Back at the parent's step, open: the tool call and its link to the child.
        step = step_expander(page, 0)
        expect(
            step.get_by_role("link", name=f"Tool call #0 started a run: run {runs.child[:12]}")
        ).to_be_visible(timeout=WAIT_MS)
        step.get_by_role("tab", name="Tool calls (1)").click()
        # The tool calls' grid (by its column: the child's page, with a cell "pricer"
        # too, may still be drawn for a moment).
        tools = grid_rows(grid_with(page, "arguments", cell="th"))
        assert tools[0]["tool"] == "pricer"
        assert HOSTILE_SHOWN in tools[0]["arguments"]
        assert_all_inert(page, dialogs)
        shot(page, "06-parent-step")
        assert len(page.context.pages) == 1  # only the link column opened a tab
        page.evaluate("alert('probe')")  # the listener does catch dialogs
        assert dialogs == ["alert: probe"]
    assert errors == []


def test_a_run_being_recorded_shows_its_new_steps_without_a_reload_in_chromium(
    chromium: Path, served: tuple[str, Recorded]
) -> None:
    link, _ = served
    dialogs: list[str] = []
    errors: list[str] = []
    with live_run() as live, browser_context(chromium, dialogs, errors, 2400) as listing:
        live.step("orders = [1, 2]")
        # 1. The runs list shows the run running, then its second step as it comes.
        listing.goto(link)
        expect(listing.get_by_role("heading", name="Runs")).to_be_visible(timeout=WAIT_MS)
        assert (row_of(listing, live.id)["status"], row_of(listing, live.id)["steps"]) == (
            "running",
            "1",
        )
        mark_document(listing)
        live.step("total = sum(orders)")
        eventually("the second step", lambda: row_of(listing, live.id)["steps"] == "2", listing)
        assert_not_reloaded(listing)
        shot(listing, "07-live-runs")

        # 2. Its Run page, opened from its link, follows it: a new step shows up.
        page = open_by_link(listing, live.id)
        expect(page.get_by_text(STILL_RECORDING)).to_be_visible(timeout=WAIT_MS)
        expect(step_expander(page, 1)).to_be_visible(timeout=WAIT_MS)
        mark_document(page)
        live.step("print(total)")
        expect(step_expander(page, 2)).to_be_visible(timeout=WAIT_MS)
        assert_not_reloaded(page)
        shot(page, "08-live-run")

        # 3. The run ends: both pages say so by themselves, and stop following it.
        live.end()
        eventually("the run's end", lambda: facts(page, live.id)["status"] == "ok", page)
        expect(page.get_by_text(STILL_RECORDING)).to_have_count(0, timeout=WAIT_MS)
        assert_not_reloaded(page)
        listing.bring_to_front()
        eventually("the run's end", lambda: row_of(listing, live.id)["status"] == "ok", listing)
        assert_not_reloaded(listing)
        assert_all_inert(listing, dialogs)
        shot(page, "09-live-ended")
    assert errors == []
