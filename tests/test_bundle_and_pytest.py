"""Bundles (``codetape export`` / ``codetape import``) carry a run, and optionally its
sandbox image, from one store to another; ``codetape pytest`` freezes a recorded step
into a test file that plain pytest runs.

Tests that record or replay in Docker need a running engine and the offline sandbox
image: they skip without them, and fail under ``CI=true``. The bad-bundle tests use an
observed-mode recording and need no Docker.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner

import codetape
from codetape.cli import cli
from codetape.errors import CodetapeError
from codetape.replayer import export_run, import_bundle
from codetape.testing import capture

from .sandbox_fixtures import build_image, remove_image
from .test_replay import Recording, record


def invoke(home: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def exchange_rate(currency: str) -> float:
    return {"EUR": 1.08, "GBP": 1.27}[currency]


INVOICE = [
    # 0: deterministic, with a host tool
    "prices = [12.5, 7.25, 3.0]\ncount = 0\nrate = exchange_rate('EUR')\nprint('rate', rate)",
    # 1: raises ZeroDivisionError
    "print('averaging', len(prices))\naverage = sum(prices) * rate / count\nprint(average)",
    # 2: reads the clock
    "import time\nstarted = time.time()\nprint('started', started)",
]
FIXED = (
    "print('averaging', len(prices))\naverage = sum(prices) * rate / max(count, 1)\nprint(average)"
)


@pytest.fixture(scope="module")
def invoice(tmp_path_factory: pytest.TempPathFactory, docker_image: str) -> Recording:
    rec = record(
        tmp_path_factory.mktemp("invoice"),
        "invoice-bot",
        INVOICE,
        image=docker_image,
        tools=[exchange_rate],
    )
    assert [s.status for s in rec.steps] == ["ok", "error", "ok"]
    return rec


# -- bundles ------------------------------------------------------------------------------


@pytest.mark.docker
def test_a_bundle_with_its_image_replays_after_the_image_is_gone(
    home: Path, tmp_path: Path, docker_image: str, docker_client: Any
) -> None:
    import docker.errors

    image_id = build_image(docker_client, docker_image)
    try:
        rec = record(
            tmp_path / "sender", "sender", ["answer = 6 * 7\nprint(answer)"], image=image_id
        )
        bundle = tmp_path / "run.codetape"
        exported = invoke(rec.home, "export", rec.run_id[:12], "-o", str(bundle), "--with-image")
        assert exported.exit_code == 0, exported.output
        assert image_id in exported.stdout
        with tarfile.open(bundle) as tar:
            names = tar.getnames()
        assert f"images/{image_id.removeprefix('sha256:')}.tar" in names

        remove_image(docker_client, image_id)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(image_id)
        missing = codetape.replay(rec.run_id, 0, home=rec.home)
        assert missing.verdict == "environment_missing", missing

        receiver = tmp_path / "receiver"
        imported = invoke(receiver, "import", str(bundle))
        assert imported.exit_code == 0, imported.output
        assert image_id in imported.stdout
        assert docker_client.images.get(image_id).id == image_id

        report = codetape.replay(rec.run_id, 0, home=receiver)
        assert report.verdict == "reproduced", report.model_dump_json(indent=2)
        assert report.image == image_id
        replayed = codetape.Store(receiver).run(report.replay_run_id)  # type: ignore[arg-type]
        assert replayed.replay_of == f"{rec.run_id}:0"
    finally:
        remove_image(docker_client, image_id)


@pytest.mark.docker
def test_a_bundle_without_the_image_keeps_every_step_field(
    invoice: Recording, tmp_path: Path
) -> None:
    bundle = tmp_path / "invoice.codetape"
    info = export_run(invoice.run_id, bundle, home=invoice.home)
    assert info.images == []
    assert info.blobs > 0
    with tarfile.open(bundle) as tar:
        assert not [n for n in tar.getnames() if n.startswith("images/")]

    receiver = tmp_path / "receiver"
    loaded = import_bundle(bundle, home=receiver)
    assert loaded.run_id == invoice.run_id
    assert loaded.images == []

    source, target = codetape.Store(invoice.home), codetape.Store(receiver)
    assert target.steps(invoice.run_id) == source.steps(invoice.run_id)
    assert target.run(invoice.run_id) == source.run(invoice.run_id)
    # Every checkpoint the steps name travelled too, with its large values and files:
    # the receiver can replay the run.
    named = 0
    for step in target.steps(invoice.run_id):
        for manifest_digest in (step.state_before, step.state_after):
            if manifest_digest is None:
                continue
            point = json.loads(target.blob(manifest_digest))["checkpoint"]
            digests = [point["digest"], *point["large"].values(), point["files"]]
            for digest in filter(None, digests):
                assert target.blob(digest) == source.blob(digest)
                named += 1
    assert named > 0


# -- bad bundles --------------------------------------------------------------------------


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real bundle of an observed run (no Docker needed), as bytes."""
    path = tmp_path_factory.mktemp("observed")
    with capture(path), codetape.run("observed") as run:
        execute("data = list(range(5000))\nprint(len(data))", {})
    target = path / "good.codetape"
    export_run(run.id, target, home=path)
    return target.read_bytes()


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _manifest(**fields: Any) -> bytes:
    return json.dumps(
        {"format": "codetape-bundle", "version": 1, "run_id": "ab" * 16, **fields}
    ).encode()


def _rewrite_manifest(bundle: bytes, **fields: Any) -> bytes:
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            members[member.name] = handle.read()
    manifest = json.loads(members["manifest.json"])
    manifest.update(fields)
    members["manifest.json"] = json.dumps(manifest).encode()
    return _tar(members)


BAD_BUNDLES: dict[str, Callable[[bytes], bytes]] = {
    "random bytes": lambda good: os.urandom(4096),
    "an empty file": lambda good: b"",
    "a truncated bundle": lambda good: good[: len(good) // 2],
    "a tar without a manifest": lambda good: _tar({"hello.txt": b"hi"}),
    "a manifest that is not JSON": lambda good: _tar({"manifest.json": b"{not json"}),
    "a manifest that is a JSON list": lambda good: _tar({"manifest.json": b"[1, 2]"}),
    "another format": lambda good: _tar({"manifest.json": _manifest(format="zip")}),
    "no spans.jsonl": lambda good: _tar({"manifest.json": _manifest()}),
    "a non-numeric version": lambda good: _rewrite_manifest(good, version="1.1"),
    "runs that are not a list": lambda good: _rewrite_manifest(good, runs="ab"),
    "runs that do not start with its run": lambda good: _rewrite_manifest(good, runs=["cd"]),
    "runs that are not ids": lambda good: _rewrite_manifest(good, runs=[None]),
}


@pytest.mark.parametrize("case", list(BAD_BUNDLES))
def test_importing_a_bad_bundle_is_a_clear_codetape_error(
    case: str, good_bundle: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "bad.codetape"
    path.write_bytes(BAD_BUNDLES[case](good_bundle))
    receiver = tmp_path / "receiver"
    with pytest.raises(CodetapeError) as caught:
        import_bundle(path, home=receiver)
    assert str(path) in caught.value.message
    assert codetape.Store(receiver).runs() == []


def test_importing_a_newer_bundle_says_to_upgrade(good_bundle: bytes, tmp_path: Path) -> None:
    path = tmp_path / "newer.codetape"
    path.write_bytes(_rewrite_manifest(good_bundle, version=99))
    receiver = tmp_path / "receiver"
    with pytest.raises(CodetapeError) as caught:
        import_bundle(path, home=receiver)
    assert "newer codetape" in caught.value.message
    assert "version 99" in caught.value.message
    assert caught.value.hint is not None
    assert "upgrade codetape" in caught.value.hint
    assert codetape.Store(receiver).runs() == []


def test_the_good_bundle_imports(good_bundle: bytes, tmp_path: Path) -> None:
    """The control for the bad ones: the unmodified bundle loads."""
    path = tmp_path / "good.codetape"
    path.write_bytes(good_bundle)
    receiver = tmp_path / "receiver"
    info = import_bundle(path, home=receiver)
    assert [r.id for r in codetape.Store(receiver).runs()] == [info.run_id]


@pytest.mark.parametrize("case", ["random bytes", "a truncated bundle", "newer"])
def test_cli_import_of_a_bad_bundle_is_one_error_line(
    case: str, good_bundle: bytes, home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "bad.codetape"
    data = (
        _rewrite_manifest(good_bundle, version=99)
        if case == "newer"
        else BAD_BUNDLES[case](good_bundle)
    )
    path.write_bytes(data)
    result = invoke(home, "import", str(path))
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines, result.output
    assert lines[0].startswith("error:"), result.stderr
    # One line for the error, optionally one for the hint; nothing else.
    assert [line.split(":")[0] for line in lines] in (["error"], ["error", "hint"]), lines


# -- nested runs --------------------------------------------------------------------------


@dataclass
class Nest:
    """A run whose step's tool call started a run, whose step started another, and a run
    of its own beside them."""

    home: Path
    parent: str
    child: str
    grandchild: str
    other: str


@codetape.tool
def ask_helper(depth: int) -> int:
    with codetape.run(f"helper {depth}", task=f"depth {depth}"):
        namespace = {"ask_helper": ask_helper}
        execute(f"answer = ask_helper({depth + 1})" if depth < 2 else "answer = 42", namespace)
    return depth


def record_nest(home: Path) -> Nest:
    with capture(home):
        with codetape.run("boss", task="ask") as parent:
            execute("print('asking')", {})
            execute("answer = ask_helper(1)", {"ask_helper": ask_helper})
        with codetape.run("other") as other:
            execute("x = 1", {})
    runs = {r.name: r for r in codetape.Store(home).runs()}
    assert runs["helper 1"].parent_run == parent.id
    assert runs["helper 2"].parent_run == runs["helper 1"].id
    return Nest(home, parent.id, runs["helper 1"].id, runs["helper 2"].id, other.id)


@pytest.fixture
def nest(tmp_path: Path) -> Nest:
    return record_nest(tmp_path / "source")


def test_a_bundle_carries_the_runs_its_steps_started(nest: Nest, tmp_path: Path) -> None:
    bundle = tmp_path / "nest.codetape"
    info = export_run(nest.parent[:8], bundle, home=nest.home)
    assert (info.run_id, info.child_runs) == (nest.parent, [nest.child, nest.grandchild])
    with tarfile.open(bundle) as tar:
        handle = tar.extractfile("manifest.json")
        assert handle is not None
        assert json.load(handle)["runs"] == [nest.parent, nest.child, nest.grandchild]
    loaded = import_bundle(bundle, home=tmp_path / "receiver")
    assert (loaded.run_id, loaded.child_runs) == (info.run_id, info.child_runs)
    assert loaded.spans == info.spans
    source, target = codetape.Store(nest.home), codetape.Store(tmp_path / "receiver")
    assert {r.id for r in target.runs()} == {nest.parent, nest.child, nest.grandchild}
    for run_id in (nest.parent, nest.child, nest.grandchild):
        assert target.run(run_id) == source.run(run_id)
        assert target.steps(run_id) == source.steps(run_id)
    (call,) = target.step(nest.parent, 1).tool_calls
    assert call.child_run == nest.child
    assert target.run(nest.grandchild).parent_step == 0


def test_a_childs_bundle_carries_its_own_children_not_its_parent(
    nest: Nest, tmp_path: Path
) -> None:
    info = export_run(nest.child, tmp_path / "child.codetape", home=nest.home)
    assert info.child_runs == [nest.grandchild]
    receiver = tmp_path / "receiver"
    import_bundle(info.path, home=receiver)
    assert {r.id for r in codetape.Store(receiver).runs()} == {nest.child, nest.grandchild}
    shown = invoke(receiver, "show", nest.child[:12])
    assert f"started by step 1 of run {nest.parent[:12]} (not in this store)" in shown.output


def test_cli_export_and_import_name_the_runs_that_came_along(nest: Nest, tmp_path: Path) -> None:
    bundle = tmp_path / "nest.codetape"
    exported = invoke(nest.home, "export", nest.parent[:8], "-o", str(bundle))
    assert exported.exit_code == 0, exported.output
    children = f"(with the runs its steps started: {nest.child[:12]}, {nest.grandchild[:12]})"
    assert f"run {nest.parent[:12]} {children}, " in exported.output
    receiver = tmp_path / "receiver"
    imported = invoke(receiver, "import", str(bundle))
    assert imported.exit_code == 0, imported.output
    assert imported.output.startswith(f"imported run {nest.parent[:12]} {children}: ")
    listed = [line.split()[:2] for line in invoke(receiver, "runs").output.splitlines()[1:]]
    assert listed == [
        [nest.parent[:12], "boss"],
        ["└", nest.child[:12]],
        ["└", nest.grandchild[:12]],
    ]


def test_a_bundle_without_a_runs_list_imports_as_one_run(
    good_bundle: bytes, tmp_path: Path
) -> None:
    """A bundle written before bundles carried child runs."""
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(good_bundle)) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            members[member.name] = handle.read()
    manifest = json.loads(members["manifest.json"])
    del manifest["runs"]
    members["manifest.json"] = json.dumps(manifest).encode()
    path = tmp_path / "old.codetape"
    path.write_bytes(_tar(members))
    info = import_bundle(path, home=tmp_path / "receiver")
    assert (info.run_id, info.child_runs) == (manifest["run_id"], [])
    assert [r.id for r in codetape.Store(tmp_path / "receiver").runs()] == [info.run_id]


def test_a_child_run_still_recording_travels_with_its_parent(tmp_path: Path) -> None:
    """A bundle written while the runs are open: the child's start record names its
    parent, so it still imports as the parent's child."""
    source = tmp_path / "source"
    written: list[Any] = []

    @codetape.tool
    def export_now() -> int:
        with codetape.run("helper"):
            execute("y = 1", {})
            written.append(export_run("last", tmp_path / "open.codetape", home=source))
        return 1

    with capture(source), codetape.run("boss") as parent:
        execute("x = export_now()", {"export_now": export_now})
    (info,) = written
    assert info.run_id != parent.id  # "last" was the helper, open inside the parent's step
    receiver = tmp_path / "receiver"
    import_bundle(info.path, home=receiver)
    (run,) = codetape.Store(receiver).runs()
    assert (run.name, run.parent_run, run.parent_step) == ("helper", parent.id, 0)


# -- codetape pytest ----------------------------------------------------------------------


def write_test(rec: Recording, out: Path, step: int, *extra: str) -> Path:
    result = invoke(rec.home, "pytest", rec.run_id, "--step", str(step), "-o", str(out), *extra)
    assert result.exit_code == 0, (result.output, result.exception)
    assert out.is_file()
    assert out.with_suffix(".codetape").is_file()
    return out


@dataclass
class Outcome:
    passed: bool
    text: str  # the failure message and report, or ""


@pytest.fixture(scope="module")
def generated(invoice: Recording, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """The test files `codetape pytest` writes for the invoice run, run by plain pytest
    in a directory of their own (none of this repository's settings), all in one
    session: one interpreter start instead of four."""
    folder = tmp_path_factory.mktemp("generated")
    fix = folder / "fix.txt"
    fix.write_text(FIXED)
    files = {
        "deterministic": write_test(invoice, folder / "test_invoice_step0.py", 0),
        "clock": write_test(invoice, folder / "test_invoice_clock.py", 2),
        "fixed": write_test(
            invoice, folder / "test_invoice_fixed.py", 1, "--expect-fix", "--code", str(fix)
        ),
        "unfixed": write_test(invoice, folder / "test_invoice_unfixed.py", 1, "--expect-fix"),
    }
    report = folder / "report.xml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *map(str, files.values()),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("CODETAPE_")},
    )
    assert report.is_file(), done.stdout + done.stderr
    cases = {
        case.get("classname", "").rsplit(".", 1)[-1]: case
        for case in ElementTree.parse(report).iter("testcase")
    }
    outcomes = {}
    for key, path in files.items():
        case = cases.get(path.stem)
        assert case is not None, (path.stem, list(cases), done.stdout + done.stderr)
        problems = [*case.iter("failure"), *case.iter("error")]
        outcomes[key] = Outcome(
            passed=not problems and not list(case.iter("skipped")),
            text="\n".join((p.get("message") or "") + "\n" + (p.text or "") for p in problems),
        )
    return outcomes


@pytest.mark.docker
def test_pytest_file_of_a_deterministic_step_passes(generated: dict[str, Outcome]) -> None:
    outcome = generated["deterministic"]
    assert outcome.passed, outcome.text


@pytest.mark.docker
def test_pytest_file_of_a_clock_reading_step_fails(generated: dict[str, Outcome]) -> None:
    outcome = generated["clock"]
    assert not outcome.passed
    assert "diverged" in outcome.text, outcome.text
    assert "variable:started" in outcome.text, outcome.text


@pytest.mark.docker
def test_pytest_expect_fix_passes_with_the_fix(generated: dict[str, Outcome]) -> None:
    outcome = generated["fixed"]
    assert outcome.passed, outcome.text


@pytest.mark.docker
def test_pytest_expect_fix_fails_without_a_fix(generated: dict[str, Outcome]) -> None:
    outcome = generated["unfixed"]
    assert not outcome.passed
    assert "still raises ZeroDivisionError" in outcome.text, outcome.text


@pytest.mark.docker
def test_pytest_output_into_a_new_directory_is_created(
    invoice: Recording, home: Path, tmp_path: Path
) -> None:
    """``-o tests/regressions/test_x.py`` where tests/regressions does not exist yet."""
    out = tmp_path / "regressions" / "test_invoice.py"
    result = invoke(invoice.home, "pytest", invoice.run_id, "--step", "0", "-o", str(out))
    assert result.exit_code == 0, (result.output, result.exception)
    assert out.is_file()
    assert out.with_suffix(".codetape").is_file()
