"""docs/sql.md documents every view's real columns and types, and shows every worked
query as the code has it; the README links it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import codetape
from codetape.store import EXAMPLE_QUERIES
from codetape.store.internal import VIEW_NAMES

ROOT = Path(__file__).parent.parent
DOC = (ROOT / "docs" / "sql.md").read_text()


def documented(view: str) -> list[tuple[str, str]]:
    """The (column, type) rows of the view's table in docs/sql.md."""
    section = DOC.split(f"### `{view}`\n", 1)[1].split("\n### ", 1)[0]
    return [
        (m[1], m[2])
        for m in re.finditer(r"^\| (\w+) \| ([A-Z][A-Z ]*[A-Z]) \| .+ \|$", section, re.MULTILINE)
    ]


@pytest.mark.parametrize("view", VIEW_NAMES)
def test_each_views_documented_columns_are_its_columns(tmp_path: Path, view: str) -> None:
    store = codetape.Store(tmp_path / "empty")
    real = store.sql(f"DESCRIBE SELECT * FROM {view}").fetchall()
    assert documented(view) == [(name, kind) for name, kind, *_ in real]


def test_every_worked_query_is_shown_as_it_runs() -> None:
    for n, example in enumerate(EXAMPLE_QUERIES, 1):
        assert f"### {n}. {example.title}\n\n```sql\n{example.sql}\n```\n" in DOC


def test_the_readme_shows_the_command_and_links_the_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/sql.md)" in readme
    assert 'codetape sql "SELECT' in readme
