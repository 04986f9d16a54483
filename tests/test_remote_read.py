"""Reading a shared history: ``codetape --remote URL runs|show|diff|export`` against a
real ``codetape serve`` (its own process, on loopback) over a store of real recorded runs
says what the same commands say on that store locally; a wrong token, a server that is
not there, a missing run and a command that is not a read are refused with a clear
message; spans that reach the server before their blobs show "blob pending" where the
content would be, and the content once the blobs are PUT.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
import streamlit as st
from click.testing import CliRunner, Result

import codetape
from codetape import Store
from codetape.cli import cli
from codetape.errors import RunNotFoundError, StepNotFoundError
from codetape.store._remote import RemoteStore
from codetape.testing import capture

from . import otlp_fixtures as scripted
from .test_serve import TOKEN, Server, free_port, local_blobs, start, stop
from .test_viewer_apptest import open_page

OTHER_CODE = ["a = add(2, b=5)\nprint('a is', a)", "result = a * 3"]


@codetape.code_action
def _execute(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(code, "<code action>", "exec"), namespace)


@dataclass(frozen=True)
class Shared:
    home: Path
    server: Server
    first: str
    second: str
    other: str


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """A store with the scripted agent's run twice and a run that differs, served."""
    home = tmp_path_factory.mktemp("remote") / "store"
    with pytest.MonkeyPatch.context() as mp, capture(home):
        mp.setenv("CODETAPE_HOME", str(home))
        mp.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        mp.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        first = scripted.record_run()
        second = scripted.record_run()
        namespace: dict[str, Any] = {"add": scripted.add}
        with codetape.run("orders-bot", task="triple it") as run:
            for code in OTHER_CODE:
                _execute(code, namespace)
            run.final_answer = "21"
        other = run.id
    server = start(home)
    try:
        yield Shared(home, server, first, second, other)
    finally:
        stop(server)


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODETAPE_TOKEN", TOKEN)
    monkeypatch.delenv("CODETAPE_REMOTE", raising=False)
    monkeypatch.delenv("CODETAPE_VIEWER_URL", raising=False)


def cli_run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def both(shared: Shared, *args: str) -> tuple[Result, Result]:
    """The command run on the store locally, and through the server."""
    local = cli_run("--home", str(shared.home), *args)
    remote = cli_run("--remote", shared.server.url, *args)
    return local, remote


@pytest.mark.parametrize(
    "args",
    [
        ["runs"],
        ["runs", "--json"],
        ["runs", "--failed"],
        ["runs", "--agent", "orders-bot", "--limit", "2"],
        ["show", "FIRST"],
        ["show", "FIRST", "--json"],
        ["show", "FIRST", "--step", "0"],
        ["show", "FIRST", "--step", "2", "--json"],
        ["show", "FIRST", "--llm"],
        ["show", "FIRST", "--llm", "--call", "0"],
        ["show", "last"],
        ["diff", "FIRST", "OTHER"],
        ["diff", "FIRST", "SECOND", "--json"],
        ["failures"],
        ["failures", "--json"],
        ["sql", "SELECT agent, count(*) AS n FROM runs GROUP BY agent ORDER BY agent"],
        ["sql", "--example", "1"],
        ["sql", "--example", "3", "--json"],
        ["sql", "--csv", "SELECT run_id, step, code, variables FROM steps ORDER BY ALL"],
        ["sql", "SELECT * FROM no_such_view"],
    ],
    ids=lambda args: " ".join(args),
)
def test_a_read_through_the_server_says_what_it_says_locally(
    shared: Shared, args: list[str]
) -> None:
    ids = {"FIRST": shared.first[:8], "SECOND": shared.second, "OTHER": shared.other[:10]}
    args = [ids.get(a, a) for a in args]
    local, remote = both(shared, *args)
    assert remote.exit_code == local.exit_code, remote.output
    assert local.exit_code == (2 if "no_such_view" in args[-1] else 0), local.output
    assert remote.output == local.output
    assert remote.output.strip()


def test_a_query_through_the_server_writes_the_parquet_it_writes_locally(
    shared: Shared, tmp_path: Path
) -> None:
    query = "SELECT run_id, step, status, started_at FROM steps ORDER BY ALL"
    written = []
    for where, name in (("--home", str(shared.home)), ("--remote", shared.server.url)):
        path = tmp_path / f"{where.strip('-')}.parquet"
        result = cli_run(where, name, "sql", query, "--parquet", str(path))
        assert result.exit_code == 0, result.output
        assert result.output.startswith("wrote ")
        relation = duckdb.sql(f"FROM '{path}'")
        assert relation is not None
        written.append(relation)
    local, remote = written
    assert remote.columns == local.columns
    assert remote.types == local.types
    assert remote.fetchall() == local.fetchall()
    assert len(local.fetchall()) == len(Store(shared.home).steps(shared.first)) * 2 + 2


def test_export_through_the_server_writes_the_bundle_export_writes_locally(
    shared: Shared, tmp_path: Path
) -> None:
    here, there = tmp_path / "local.codetape", tmp_path / "remote.codetape"
    local = cli_run("--home", str(shared.home), "export", shared.first[:8], "-o", str(here))
    remote = cli_run("--remote", shared.server.url, "export", shared.first[:8], "-o", str(there))
    assert local.exit_code == 0, local.output
    assert remote.exit_code == 0, remote.output
    # The same line but for the file's name.
    assert remote.output.replace("remote.codetape", "local.codetape") == local.output

    def contents(path: Path) -> dict[str, bytes]:
        with tarfile.open(path, "r:gz") as tar:
            return {
                m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()
            }

    assert contents(there) == contents(here)
    # It imports as the run it is.
    imported = tmp_path / "imported"
    result = cli_run("--home", str(imported), "import", str(there))
    assert result.exit_code == 0, result.output
    assert [s.code for s in Store(imported).steps(shared.first)] == scripted.CODE


def test_remote_store_reads_as_store_does(shared: Shared) -> None:
    local, remote = Store(shared.home), RemoteStore(shared.server.url, TOKEN)
    assert remote.runs() == local.runs()
    assert remote.count_runs(search="double") == local.count_runs(search="double") == 2
    assert remote.agents() == local.agents()
    assert remote.steps(shared.first, 1, 1) == local.steps(shared.first, 1, 1)
    assert remote.steps(shared.first, contents=False) == local.steps(shared.first, contents=False)
    assert remote.step_codes(shared.first, shared.other) == local.step_codes(
        shared.first, shared.other
    )
    assert remote.llm_calls(shared.first, messages=False) == local.llm_calls(
        shared.first, messages=False
    )
    query = "SELECT run_id, step, code FROM steps ORDER BY run_id, step"
    assert remote.sql(query).fetchall() == local.sql(query).fetchall()
    code = local.steps(shared.first)[0]
    assert code.state_after is not None
    assert remote.blob(code.state_after) == local.blob(code.state_after)


def test_a_missing_run_or_step_is_the_error_it_is_locally(shared: Shared) -> None:
    remote = RemoteStore(shared.server.url, TOKEN)
    with pytest.raises(RunNotFoundError) as there:
        remote.run("0" * 32)
    with pytest.raises(RunNotFoundError) as here:
        Store(shared.home).run("0" * 32)
    assert (there.value.message, there.value.hint) == (here.value.message, here.value.hint)
    assert there.value.run_id == here.value.run_id == "0" * 32
    with pytest.raises(StepNotFoundError) as missing_step:
        remote.step(shared.first, 99)
    assert (missing_step.value.run_id, missing_step.value.index) == (shared.first, 99)
    local, through = both(shared, "show", "feedbeef")
    assert through.exit_code == local.exit_code != 0
    assert through.output == local.output
    assert "no run" in through.output


def test_a_wrong_or_missing_token_is_refused_with_what_to_do(
    shared: Shared, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CODETAPE_TOKEN", "not-the-token")
    result = cli_run("--remote", shared.server.url, "runs")
    assert result.exit_code != 0
    assert "refused a request with a token it does not accept" in result.output
    assert "CODETAPE_TOKEN" in result.output
    monkeypatch.delenv("CODETAPE_TOKEN")
    result = cli_run("--remote", shared.server.url, "runs")
    assert "refused a request without a token" in result.output
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    result = cli_run("--remote", shared.server.url, "--token-file", str(token_file), "runs")
    assert result.exit_code == 0, result.output
    assert shared.first[:12] in result.output


def test_a_server_that_is_not_there_is_said(shared: Shared) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli_run("--remote", url, "runs")
    assert result.exit_code != 0
    assert f"cannot reach the codetape server at {url}" in result.output
    assert "codetape serve" in result.output
    result = cli_run("--remote", "ftp://x", "runs")
    assert result.exit_code == 2
    assert "is not a server address" in result.output


def test_what_is_not_a_read_is_refused(shared: Shared) -> None:
    result = cli_run("--remote", shared.server.url, "replay", shared.first)
    assert result.exit_code == 2
    assert "`codetape replay` works on a local store: drop --remote" in result.output
    # Nothing but reads on the read endpoints.
    for method, path in (
        ("POST", "/v1/runs"),
        ("DELETE", f"/v1/runs/{shared.first}"),
        ("PUT", f"/v1/runs/{shared.first}/steps"),
        ("GET", "/v1/sql"),
    ):
        assert shared.server.request(method, path, b"{}")[0] == 405, (method, path)
    # Every read needs the token.
    assert shared.server.request("GET", "/v1/runs", token=None)[0] == 401
    assert shared.server.request("GET", f"/v1/runs/{shared.first}", token="x")[0] == 401
    # A query that writes is refused as locally.
    remote = RemoteStore(shared.server.url, TOKEN)
    with pytest.raises(codetape.errors.SqlError) as refused:
        remote.sql("DELETE FROM runs")
    # Its fields as a local SqlError has them (the viewer's Query page shows the reason).
    assert refused.value.refused is True
    assert refused.value.reason in refused.value.message
    # A query is not an upload: a body over 1 MB is refused before it is all read.
    big = json.dumps({"query": "SELECT 1 --" + "x" * (2 << 20), "params": None}).encode()
    status, answer = shared.server.request("POST", "/v1/sql", big)
    assert status == 413, answer
    assert len(Store(shared.home).runs()) == 3


def test_parquet_export_and_images_are_refused_through_the_server(
    shared: Shared, tmp_path: Path
) -> None:
    result = cli_run("--remote", shared.server.url, "export", "--parquet", str(tmp_path / "p"))
    assert result.exit_code != 0
    assert "needs a store on this machine" in result.output
    result = cli_run(
        "--remote", shared.server.url, "export", shared.first, "-o", str(tmp_path / "b"),
        "--with-image",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "--with-image is not served by --remote" in result.output


# -- blob pending ----------------------------------------------------------------


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[Server]:
    running = start(tmp_path / "server")
    try:
        yield running
    finally:
        stop(running)


def record_spans_only(server: Server, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A run recorded into ``home`` whose spans alone go to ``server``, gzip with the
    token header, as through an OpenTelemetry Collector; its blobs stay here."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"authorization=Bearer%20{TOKEN}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    rt = codetape.configure(home=home, otlp=server.url)
    run_id = scripted.record_run()
    assert rt.provider.force_flush(30_000)
    # Done recording: nothing of this runtime is left to run while the process exits.
    rt.shutdown()
    return run_id


def test_spans_without_their_blobs_show_blob_pending_until_the_blobs_arrive(
    empty_server: Server, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = record_spans_only(empty_server, home, monkeypatch)

    remote = RemoteStore(empty_server.url, TOKEN)
    steps = remote.steps(run_id)
    assert [s.index for s in steps] == [0, 1, 2]
    for step in steps:
        assert "[codetape: blob pending: sha256:" in step.code
    assert "blob pending" in steps[0].stdout
    shown = cli_run("--remote", empty_server.url, "show", run_id[:8], "--step", "0")
    assert shown.exit_code == 0, shown.output
    assert "blob pending" in shown.output
    calls = remote.llm_calls(run_id)
    assert all("blob pending" in m.content for m in calls[0].input_messages)

    for digest, data in local_blobs(home).items():
        assert empty_server.request("PUT", f"/v1/blobs/{digest}", data)[0] == 201
    steps = remote.steps(run_id)
    assert [s.code for s in steps] == scripted.CODE
    assert steps[0].stdout == "a is 6\n"
    assert all("blob pending" not in m.content for m in remote.llm_calls(run_id)[0].input_messages)
    shown = cli_run("--remote", empty_server.url, "show", run_id[:8], "--step", "0")
    assert "blob pending" not in shown.output
    assert "a is 6" in shown.output


def test_an_empty_server_lists_no_runs(empty_server: Server) -> None:
    result = cli_run("--remote", empty_server.url, "runs")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"no runs in {empty_server.url}"


def test_a_bundle_from_the_server_is_a_gzip_tar(shared: Shared) -> None:
    data = RemoteStore(shared.server.url, TOKEN).bundle(shared.other)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest["run_id"] == shared.other


def test_the_run_page_shows_blob_pending_until_the_blobs_arrive(
    empty_server: Server,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    run_id = record_spans_only(empty_server, home, monkeypatch)
    monkeypatch.setenv("CODETAPE_REMOTE", empty_server.url)
    monkeypatch.setenv("CODETAPE_HOME", str(tmp_path / "nothing-here"))
    st.cache_data.clear()
    st.cache_resource.clear()

    at = open_page("run", run=run_id, step="0")
    codes = [c.value for c in at.code]
    assert any("[codetape: blob pending: sha256:" in c for c in codes), codes
    for digest, data in local_blobs(home).items():
        assert empty_server.request("PUT", f"/v1/blobs/{digest}", data)[0] == 201
    at.run()
    codes = [c.value.rstrip("\n") for c in at.code]
    assert not any("blob pending" in c for c in codes), codes
    assert scripted.CODE[0] in codes
