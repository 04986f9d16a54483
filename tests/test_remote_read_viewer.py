"""The viewer reading through ``codetape ui --remote URL``: Streamlit AppTest opens each
page on the store of tests/test_viewer_apptest.py (observed, sandboxed, replayed,
long, incomplete and still-running runs, XSS payloads in recorded text) once locally and
once through a real ``codetape serve`` on that store, and the pages show the same; a
replay button says it is not offered through the server; blobs that have not reached
the server show as "blob pending" on the Run page, and their content once they arrive.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

import codetape
from codetape.cli import cli
from codetape.viewer import _query

from .test_remote_read import empty_server
from .test_serve import TOKEN, Server, start, stop
from .test_viewer_apptest import (
    Tape,
    _fresh_caches,
    _page,
    assert_inert,
    launched,
    open_page,
    tape,
)

# The fixtures this module shares with the viewer's and the server's tests.
FIXTURES = (empty_server, _fresh_caches, launched, tape)


@pytest.fixture(scope="module")
def served(tape: Tape) -> Iterator[Server]:
    server = start(tape.home)
    try:
        yield server
    finally:
        stop(server)


def shown(at: AppTest) -> list[tuple[str, Any]]:
    """What the page shows, element by element, in order."""
    found: list[tuple[str, Any]] = []
    for node in _page(at):
        kind = getattr(node, "type", None)
        if kind in ("dataframe", "arrow_data_frame"):
            found.append((kind, node.value.to_csv()))
            continue
        for name in ("label", "value"):
            value = getattr(node, name, None) if kind else None
            if isinstance(value, (str, int, float, bool)):
                found.append((f"{kind}.{name}", value))
    return found


def local(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODETAPE_REMOTE", raising=False)
    monkeypatch.setenv("CODETAPE_HOME", str(home))


def remote(server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CODETAPE_REMOTE", server.url)
    monkeypatch.setenv("CODETAPE_TOKEN", TOKEN)
    # No store here: everything comes from the server.
    monkeypatch.setenv("CODETAPE_HOME", str(tmp_path / "nothing-here"))


def both(
    tape: Tape,
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    page: str,
    **params: str,
) -> tuple[AppTest, AppTest]:
    import streamlit as st

    local(tape.home, monkeypatch)
    here = open_page(page, **params)
    st.cache_data.clear()
    st.cache_resource.clear()
    remote(server, monkeypatch, tmp_path)
    there = open_page(page, **params)
    return here, there


PAGES = [
    ("runs", {}),
    ("run", {"run": "SANDBOXED"}),
    ("run", {"run": "SANDBOXED", "step": "1"}),
    ("run", {"run": "LONG", "step": "33"}),
    ("run", {"run": "INCOMPLETE"}),
    ("compare", {"a": "FAILING", "b": "FIXED"}),
    ("compare", {"a": "SANDBOXED", "b": "REPLAY"}),
    ("failures", {}),
]


@pytest.mark.parametrize(("page", "params"), PAGES, ids=lambda v: str(v))
def test_a_page_through_the_server_shows_what_it_shows_locally(
    tape: Tape,
    served: Server,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    page: str,
    params: dict[str, str],
) -> None:
    ids = {
        "SANDBOXED": tape.sandboxed,
        "LONG": tape.long,
        "INCOMPLETE": tape.incomplete,
        "FAILING": tape.failing,
        "FIXED": tape.fixed,
        "REPLAY": tape.replay,
    }
    params = {k: ids.get(v, v) for k, v in params.items()}
    here, there = both(tape, served, monkeypatch, tmp_path, page, **params)
    assert not there.exception, [e.value for e in there.exception]
    assert shown(there) == shown(here)
    assert len(shown(there)) > 3
    assert_inert(there)


def test_the_query_page_answers_through_the_server(
    tape: Tape,
    served: Server,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    query = "SELECT agent, count(*) AS n FROM runs GROUP BY agent ORDER BY agent"
    answers = []
    for at in both(tape, served, monkeypatch, tmp_path, "query"):
        at.text_area(key=_query.SQL_KEY).input(query)
        at.button(key="query-run").click().run()
        assert not at.exception, [e.value for e in at.exception]
        answers.append(shown(at))
    assert answers[0] == answers[1]
    assert any("bulk" in str(value) for _, value in answers[1])


def test_a_replay_button_through_the_server_says_it_is_not_offered(
    tape: Tape,
    served: Server,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    remote(served, monkeypatch, tmp_path)
    monkeypatch.setenv("CODETAPE_UI_TOKEN", "launch-token")
    monkeypatch.setenv("CODETAPE_UI_ALLOW_LOCAL_EXEC", "1")
    before = len(codetape.Store(tape.home).runs(limit=500))
    at = open_page("run", run=tape.sandboxed, step="0", token="launch-token")
    at.button(key=f"replay:{tape.sandboxed}:0").click().run()
    assert not at.exception, at.exception
    assert "The replay could not run." in [e.value for e in at.error]
    said = [str(value) for _, value in shown(at)]
    assert any("is not offered" in t and served.url in t for t in said), said
    assert len(codetape.Store(tape.home).runs(limit=500)) == before


def test_ui_remote_starts_the_viewer_on_the_server_with_its_token(
    launched: list[tuple[list[str], dict[str, str]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CODETAPE_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("the-servers-token\n")
    url = "https://codetape.internal:4318"
    result = CliRunner().invoke(
        cli, ["--remote", url, "--token-file", str(token_file), "ui", "--home", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert f"(store {url})" in result.output
    [(_, env)] = launched
    assert env["CODETAPE_REMOTE"] == url
    assert env["CODETAPE_TOKEN"] == "the-servers-token"
    # Run ids are not linked to a viewer of another store.
    assert not (tmp_path / "viewer.json").exists()
