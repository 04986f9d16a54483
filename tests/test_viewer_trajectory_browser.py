"""The whole trajectory in a real browser: ``codetape ui`` serves a store of real
smolagents runs (``test_viewer_trajectory.record_hostile``: a small evaluation failing
three ways, and an agent whose task, thoughts, model name, outputs and tool error carry
XSS payloads and a right-to-left override), and headless Debian Chromium goes from the
runs list to the Failures page, opens the hostile group's newest example with its
model call, and compares it with a passing run.

For the whole session no dialog may open; at every stop the DOM must hold no script
with the payload, no ``onerror`` attribute, no image from the payload, no
``javascript:`` link, no link from the Markdown in smolagents' system prompt, and no
bidi control character at all, while the payloads show on the page as text (the
override as the escape ``\\u202e``).

Screenshots of every stop, and the server's log, go to ``artifacts/browser/trajectory/``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
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
from .test_viewer_apptest import IMG, LINK, SCRIPT
from .test_viewer_browser import (
    assert_inert,
    code_block,
    grid_rows,
    grid_with,
    step_expander,
)
from .test_viewer_trajectory import (
    BIDI_CONTROLS,
    BIDI_SHOWN,
    HOSTILE_SHOWN,
    WEATHER_AGENT,
    record_hostile,
)

if TYPE_CHECKING:
    from playwright.sync_api import Dialog, Page

if HAVE_PLAYWRIGHT:
    from playwright.sync_api import expect, sync_playwright

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = ARTIFACTS / "trajectory"
MODEL_SHOWN = f"model {LINK} {BIDI_SHOWN}"


@pytest.fixture
def served(home: Path) -> Iterator[tuple[str, str, str]]:
    """``codetape ui`` on a free loopback port over the recorded store: the link it
    prints (with its token), and the hostile agent's failing and passing runs. Stopped
    at the end (terminate, then kill)."""
    failed, passed = record_hostile(home)
    with codetape_ui(home, fresh_shots(SHOTS)) as link:
        yield link, failed, passed


# -- page helpers ----------------------------------------------------------------


def assert_all_inert(page: Page, dialogs: list[str]) -> None:
    """``assert_inert``, and: no link made from the Markdown links of smolagents'
    system prompt, and no bidi control character anywhere in the document."""
    assert_inert(page, dialogs)
    assert page.locator("a[href*='nuclearmuseum']").count() == 0
    text = page.evaluate("() => document.body.textContent")
    assert isinstance(text, str)
    assert [c for c in BIDI_CONTROLS if c in text] == []


def shot(page: Page, name: str) -> None:
    """A screenshot of the whole page (Streamlit scrolls an inner container)."""
    size = page.viewport_size
    assert size is not None
    height = page.get_by_test_id("stMain").evaluate("main => main.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height)})
    page.wait_for_timeout(500)  # the grids redraw their canvases at the new size
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)
    page.set_viewport_size(size)


def open_failures(page: Page) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Failures").click()
    expect(page.get_by_role("heading", name="Failures")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("4 failure signatures · page 1 of 1")).to_be_visible(timeout=WAIT_MS)


# -- the test --------------------------------------------------------------------


def test_failures_to_a_hostile_model_call_and_a_comparison_in_chromium(
    chromium: Path, served: tuple[str, str, str]
) -> None:
    link, failed, passed = served
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

            # 1. From the runs list to the Failures page, through the navigation.
            page.goto(link)
            expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=WAIT_MS)
            open_failures(page)
            groups = grid_rows(grid_with(page, "agents", "th"))
            assert sorted((r["error"], r["runs"], r["agents"]) for r in groups) == [
                ("KeyError", "2", "orders_bot"),
                ("ValueError", "1", WEATHER_AGENT),
                ("ValueError", "2", "orders_bot"),
                ("ZeroDivisionError", "2", "orders_bot"),
            ]
            [weather] = [r for r in groups if r["agents"] == WEATHER_AGENT]
            assert weather["group"] == "4"  # the groups that failed the most runs first
            example = code_block(page, f"no weather for Pariss: {SCRIPT} {IMG}")
            expect(example).to_contain_text(f"no weather for Pariss: {HOSTILE_SHOWN}")
            assert_all_inert(page, dialogs)
            shot(page, "01-failures")

            # 2. The hostile group's newest example: the Run page at its failing step.
            page.get_by_role("link", name=f"Newest example: step 0 of run {failed[:12]}").click()
            expect(page).to_have_url(re.compile(rf"/run\?run={failed}&step=0"), timeout=WAIT_MS)
            facts = {r["field"]: r["value"] for r in grid_rows(grid_with(page, failed))}
            assert facts["model calls"] == "2"
            assert re.fullmatch(r"[\d,]+ in · [\d,]+ out", facts["tokens"])
            assert float(facts["cost"]) > 0
            assert facts["task"] == f"Weather for {HOSTILE_SHOWN}"
            calls = grid_rows(grid_with(page, "latency", "th"))
            assert [(r["call"], r["step"], r["model"]) for r in calls] == [
                ("0", "0", MODEL_SHOWN),
                ("1", "1", MODEL_SHOWN),
            ]
            step = step_expander(page, 0)
            expect(step.locator("summary").first).to_contain_text("✗ Step 0 · error")
            thought = step.get_by_test_id("stText").filter(has_text="Thought: <script>")
            expect(thought).to_have_text(f"Thought: {HOSTILE_SHOWN}", timeout=WAIT_MS)
            assert_all_inert(page, dialogs)

            # 3. Its model call, opened: the input messages and the output, as text.
            step.locator("summary", has_text="Model call 0 ·").click()
            expect(step.get_by_text("Message 0 · system")).to_be_visible(timeout=WAIT_MS)
            expect(step.get_by_text("Message 1 · user")).to_be_visible()
            task = code_block(step, "New task:")
            expect(task).to_contain_text(f"Weather for {HOSTILE_SHOWN}")
            output = code_block(step, "Thought: <script>")
            expect(output).to_contain_text(f"Thought: {HOSTILE_SHOWN}")
            expect(code_block(step, "You are an expert assistant")).to_contain_text(
                "[Stanislaus Ulam 1979 interview](https://"
            )
            models = grid_rows(grid_with(page, "latency", "td"))
            assert {"field": "model", "value": MODEL_SHOWN} in models
            assert_all_inert(page, dialogs)
            shot(page, "02-model-call")

            # 4. Back to the Failures page, then the Compare of the example with a run
            # of the same agent and task that passed: the thoughts differ first.
            open_failures(page)
            page.get_by_role(
                "link", name=f"Compare with a passing run of the same task ({passed[:12]})"
            ).click()
            expect(page.get_by_role("heading", name="Compare runs")).to_be_visible(timeout=WAIT_MS)
            expect(page).to_have_url(re.compile(rf"/compare\?a={failed}&b={passed}"))
            expect(
                page.get_by_text("First divergence: step 0 of A ↔ step 0 of B (pair 0).")
            ).to_be_visible(timeout=WAIT_MS)
            expect(
                page.get_by_text("The model outputs the two steps' code came from differ.")
            ).to_be_visible()
            expect(code_block(page, "-Thought: <script>")).to_contain_text(
                f"-Thought: {HOSTILE_SHOWN}"
            )
            assert_all_inert(page, dialogs)
            shot(page, "03-compare")
            assert len(context.pages) == 1  # nothing opened a window
            # The listener does catch dialogs: the "none fired" checks above mean it.
            page.evaluate("alert('probe')")
            assert dialogs == ["alert: probe"]
        except BaseException:
            with contextlib.suppress(Exception):
                page.screenshot(path=SHOTS / "failure.png")
            raise
        finally:
            browser.close()

    assert page_errors == []
