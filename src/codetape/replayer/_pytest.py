"""``codetape pytest``: freeze a recorded step into a regression test file."""

from __future__ import annotations

import os
from pathlib import Path

from ..store import Store
from ._bundle import export_run

__all__ = ["write_pytest"]

_TEMPLATE = '''"""Regression test for step {step} of codetape run {short} (by `codetape pytest`).

Agent: {agent}. Task: {task}
The recorded run travels in {bundle} beside this file; the test imports it into a fresh
store and replays the step in the recorded sandbox image, with the recorded variables
and tool answers. It needs only pytest and codetape (and Docker for a sandboxed step).
"""

from pathlib import Path

import codetape
from codetape.replayer import import_bundle

BUNDLE = Path(__file__).with_name({bundle!r})
RUN_ID = {run_id!r}
STEP = {step}
{extra}

def test_{name}(tmp_path: Path) -> None:
    home = tmp_path / "store"
    import_bundle(BUNDLE, home=home)
{body}
'''

_REPRODUCES = """    report = codetape.replay(RUN_ID, STEP, home=home)
    assert report.verdict == "reproduced", report.model_dump_json(indent=2)
"""

_EXPECT_FIX = """    report = codetape.replay(RUN_ID, STEP, home=home, code=CODE, image=IMAGE)
    assert report.replay_run_id is not None, report.reason
    replayed = codetape.Store(home).step(report.replay_run_id, 0)
    assert replayed.error is None, f"still raises {replayed.error.type}: {replayed.error.message}"
"""

_FIX_KNOBS = """
# The step raised when it was recorded ({error}). Set CODE to the fixed snippet (or
# IMAGE to a sandbox image with what was missing); the test passes once it no longer
# raises on the recorded input.
CODE: str | None = {code!r}
IMAGE: str | None = {image!r}
"""


def write_pytest(
    run_id: str,
    step: int,
    path: str | os.PathLike[str],
    *,
    expect_fix: bool = False,
    code: str | None = None,
    image: str | None = None,
    with_image: bool = False,
    home: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a pytest file at ``path`` (and the run's bundle beside it) that replays
    ``step`` and asserts it reproduces, or with ``expect_fix`` that it no longer raises.
    """
    store = Store(home)
    full = store.resolve_run_id(run_id)
    run = store.run(full)
    recorded = store.step(full, step)
    target = Path(path)
    if target.suffix != ".py":
        target = target.with_suffix(".py")
    bundle = target.with_name(target.stem + ".codetape")
    target.parent.mkdir(parents=True, exist_ok=True)
    export_run(full, bundle, with_image=with_image, home=store.home)
    error = f"{recorded.error.type}: {recorded.error.message}" if recorded.error else "no error"
    extra = (
        _FIX_KNOBS.format(error=error.replace("\n", " ")[:200], code=code, image=image)
        if expect_fix
        else ""
    )
    text = _TEMPLATE.format(
        step=step,
        short=full[:12],
        agent=run.name,
        task=(run.task or "-").replace("\n", " ")[:200],
        bundle=bundle.name,
        run_id=full,
        extra=extra,
        name=f"step_{step}_no_longer_raises" if expect_fix else f"step_{step}_reproduces",
        body=_EXPECT_FIX if expect_fix else _REPRODUCES,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target
