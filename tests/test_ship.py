"""Shipping to ``codetape serve``: what the server stores from shipped spans equals
what the local store has, row for row in every ``v1`` view, and nothing arrives twice
or goes missing.

The mapping between spool records and OTLP spans round-trips every value type. The
integration test starts ``codetape serve`` on loopback and three recording processes
that ship to it: one through the plain OTLP exporter (its blobs sent by
``codetape push``), one killed with ``kill -9`` inside a step and started again (its
shipper resumes and ends the killed run), one started while the server is down (it
ships once the server is up; it also runs a scripted smolagents CodeAgent).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codetape import Store
from codetape.store._ship_http import Budget, Client, Fatal, GaveUp
from codetape.store.internal import record_of, request_of, span_of

from .test_serve import _CLI, TOKEN, Server, free_port, stop

_CHILD = str(Path(__file__).with_name("_child_ship.py"))
_VIEWS = ("runs", "steps", "tool_calls", "variables", "llm_calls")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
WAIT_S = 240.0


# -- the mapping ---------------------------------------------------------------------------

_SPAN: dict[str, Any] = {
    "t": "span",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
    "parent_id": "00f067aa0ba902b7",
    "name": "execute_code",
    "start_ns": 1_796_000_000_000_000_001,
    "end_ns": 1_796_000_000_500_000_002,
    "status": "ERROR",
    "status_message": "division by zero",
    "attributes": {
        "text": "naïve ✓ <b>",
        "int": -(2**63),
        "big": 2**63 - 1,
        "float": 0.1,
        "whole float": 2.0,
        "yes": True,
        "no": False,
        "nothing": None,
        "list": [1, "two", 3.5, [True, None]],
        "object": {"a": {"b": [1, 2]}, "c": "d"},
        "empty": "",
    },
    "events": [
        {"name": "exception", "ts": 1_796_000_000_400_000_000, "attributes": {"x": [1]}},
        {"name": "note", "ts": 7, "attributes": {}},
    ],
}
_ROOT = {**_SPAN, "parent_id": None, "status": "OK", "status_message": None, "events": []}
_START = {
    "t": "start",
    "trace_id": _SPAN["trace_id"],
    "span_id": _SPAN["span_id"],
    "parent_id": None,
    "name": "invoke_agent doomed",
    "start_ns": 5,
    "attributes": {"gen_ai.agent.name": "doomed"},
}


def recorded_store(tmp_path: Path) -> Path:
    """A store (``tmp_path/agent``) the child recorded into, with no remote set."""
    home = tmp_path / "agent"
    done = subprocess.run(
        [sys.executable, _CHILD, "ship"],
        env={**os.environ, "CODETAPE_HOME": str(home), "CODETAPE_REMOTE": ""},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 0, done.stderr
    return home


@pytest.mark.parametrize("record", [_SPAN, _ROOT, _START], ids=["span", "root", "start"])
def test_a_record_comes_back_from_its_span_unchanged(record: dict[str, Any]) -> None:
    request = request_of([span_of(record)], ended=record["t"] == "start")
    decoded = type(request)()
    decoded.ParseFromString(request.SerializeToString())
    span = decoded.resource_spans[0].scope_spans[0].spans[0]
    back = record_of(span, max_depth=8, start=record["t"] == "start")
    assert json.dumps(back) == json.dumps(record)  # the same values, types and order


# -- the three processes -------------------------------------------------------------------


def serve(home: Path, port: int) -> Server:
    process = subprocess.Popen(
        [sys.executable, "-c", _CLI, "serve", "--home", str(home), "--port", str(port)],
        env={**os.environ, "CODETAPE_TOKEN": TOKEN},
        stderr=subprocess.PIPE,
    )
    server = Server(f"http://127.0.0.1:{port}", port, home, process)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode() if process.stderr else "")
        try:
            if server.request("GET", "/healthz")[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    stop(server)
    raise AssertionError("codetape serve did not answer /healthz")


def child(home: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, _CHILD, *args],
        env={**os.environ, "CODETAPE_HOME": str(home), "CODETAPE_TOKEN": TOKEN, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=WAIT_S)
    assert process.returncode == 0, err
    return out


def wait_for(what: Any, message: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not what():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


def push(home: Path, url: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "--home", str(home), "push", "--remote", url, "--json"],
        env={**os.environ, "CODETAPE_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 0, done.stderr
    stats: dict[str, Any] = json.loads(done.stdout)
    return stats


def rows(store: Store, view: str, runs: list[str]) -> list[tuple[Any, ...]]:
    column = "trace_id" if view == "spans" else "run_id"
    found = store.sql(
        f"SELECT * FROM {view} WHERE {column} IN (SELECT unnest($runs)) ORDER BY ALL",
        {"runs": runs},
    ).fetchall()
    return [
        tuple(json.loads(v) if view == "spans" and i >= 9 else v for i, v in enumerate(r))
        for r in found
    ]


def statuses(store: Store) -> dict[str, int]:
    return dict(store.sql("SELECT status, count(*) FROM runs GROUP BY status").fetchall())


def spooled_spans(home: Path, runs: list[str]) -> Counter[str]:
    """How many span records of each of ``runs`` the spool files at ``home`` hold: a
    span sent twice is two records in the server's spool (its database keeps one)."""
    found: Counter[str] = Counter()
    for path in sorted(home.glob("spool/*/*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("t") == "span" and record.get("trace_id") in runs:
                found[record["trace_id"]] += 1
    return found


def run_ids(store: Store) -> list[str]:
    return [run_id for (run_id,) in store.sql("SELECT run_id FROM runs").fetchall()]


def same_history(local: Store, server: Store) -> list[str]:
    """The local store's runs, after checking the server holds them row for row."""
    runs = run_ids(local)
    for view in (*_VIEWS, "spans"):
        assert rows(server, view, runs) == rows(local, view, runs), view
    return runs


def blobs_verified(local: Store, server: Store, runs: list[str]) -> int:
    """Every blob the runs name (their spans, their variables) is on the server, with
    the bytes of its digest."""
    spans = local.sql(
        "SELECT attributes FROM spans WHERE trace_id IN (SELECT unnest($r))", {"r": runs}
    ).fetchall()
    named = {d for (attributes,) in spans for d in _DIGEST.findall(attributes)}
    named |= {
        d
        for (d,) in local.sql(
            "SELECT digest FROM variables WHERE digest IS NOT NULL AND run_id IN "
            "(SELECT unnest($r))",
            {"r": runs},
        ).fetchall()
    }
    checked = 0
    for digest in sorted(named):
        try:
            data = local.blob(digest)
        except Exception:  # a digest that names no blob (an environment fingerprint)
            continue
        assert server.blob(digest) == data
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        checked += 1
    return checked


@pytest.mark.slow
def test_three_recording_processes_ship_to_one_server(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    homes = {name: tmp_path / name for name in ("otlp", "killed", "late")}

    # Started while the server is down: it records, and its shipper keeps retrying.
    recorded = tmp_path / "late-recorded"
    hold = tmp_path / "late-hold"
    late = child(
        homes["late"],
        "ship",
        "--smolagents",
        "--recorded",
        str(recorded),
        "--hold",
        str(hold),
        CODETAPE_REMOTE=url,
    )
    wait_for(recorded.exists, "the process started while the server was down did not record")

    server = serve(tmp_path / "server", port)
    try:
        remote = Store(server.home)

        # Through the plain OTLP exporter, then its blobs (and its spans again) by push.
        otlp = child(
            homes["otlp"],
            "otlp",
            url,
            OTEL_EXPORTER_OTLP_TRACES_HEADERS=f"authorization=Bearer%20{TOKEN}",
            OTEL_EXPORTER_OTLP_TRACES_COMPRESSION="gzip",
        )
        finished(otlp)
        pushed = push(homes["otlp"], url)
        assert pushed["refused_spans"] == pushed["refused_blobs"] == 0
        assert pushed["blobs_sent"] > 0
        again = push(homes["otlp"], url)
        assert (again["spans"], again["blobs_sent"]) == (0, 0)

        # Killed inside a step, then started again on the same store.
        ready = tmp_path / "in-the-step"
        killed = child(homes["killed"], "ship", "--die-in-step", str(ready), CODETAPE_REMOTE=url)
        wait_for(ready.exists, "the process to kill did not reach its step")
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=WAIT_S)
        finished(child(homes["killed"], "ship", CODETAPE_REMOTE=url))

        late_runs = run_ids(Store(homes["late"]))
        wait_for(
            lambda: set(late_runs) <= set(run_ids(remote)),
            "the process started while the server was down did not ship once it was up",
        )
        hold.touch()
        finished(late)

        wait_for(
            lambda: statuses(remote) == {"ok": 8, "incomplete": 1},
            "the killed run did not end incomplete on the server",
        )
        for name, home in homes.items():
            local = Store(home)
            runs = same_history(local, remote)
            assert runs, name
            assert blobs_verified(local, remote, runs) > 5, name

        tools = remote.sql(
            "SELECT tool FROM tool_calls WHERE agent = 'CodeAgent' ORDER BY started_at"
        ).fetchall()
        assert tools == [("get_orders",), ("refund",)]  # the smolagents agent's

        # In normal operation (not killed, not sent again by hand) nothing is sent twice.
        late_spans = spooled_spans(homes["late"], late_runs)
        assert spooled_spans(server.home, late_runs) == late_spans

        # Every finished step arrived once, the killed run is incomplete, its step
        # interrupted, as in the store that recorded it.
        assert (
            remote.sql(
                "SELECT run_id, step, count(*) FROM steps GROUP BY ALL HAVING count(*) > 1"
            ).fetchall()
            == []
        )
        killed_run = remote.sql(
            "SELECT run_id, agent, status FROM runs WHERE status = 'incomplete'"
        ).fetchall()
        assert [(agent, status) for _, agent, status in killed_run] == [("doomed", "incomplete")]
        assert remote.sql(
            "SELECT step, status FROM steps WHERE run_id = ? ORDER BY step", [killed_run[0][0]]
        ).fetchall() == [(0, "ok"), (1, "interrupted")]
        total = sum(len(run_ids(Store(home))) for home in homes.values())
        assert len(run_ids(remote)) == total == 1 + 5 + 3
    finally:
        stop(server)
        if late.poll() is None:
            late.kill()


def _push(home: Path, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLI, "--home", str(home), "push", *args],
        env={**os.environ, "CODETAPE_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )


@pytest.mark.slow
def test_push_by_hand(tmp_path: Path) -> None:
    home = recorded_store(tmp_path)
    assert not (home / "ship").exists()  # no remote: nothing shipped
    server = serve(tmp_path / "server", free_port())
    try:
        refused = _push(home, "--remote", server.url, token="not-the-token")
        assert refused.returncode == 2
        assert "refused the token (401)" in refused.stderr
        assert "$CODETAPE_TOKEN" in refused.stderr

        first = _push(home, "--remote", server.url + "/v1/traces", "--json")
        assert first.returncode == 0, first.stderr
        sent = json.loads(first.stdout)
        assert sent["spans"] > 0
        assert sent["blobs_sent"] > 0
        remote = Store(server.home)
        wait_for(lambda: len(run_ids(remote)) == 2, "the pushed runs did not arrive")
        runs = same_history(Store(home), remote)
        assert blobs_verified(Store(home), remote, runs) > 5
        assert spooled_spans(server.home, runs) == spooled_spans(home, runs)

        # --since: everything since then again, which the server keeps once.
        again = _push(home, "--remote", server.url, "--since", "2000-01-01", "--json")
        assert json.loads(again.stdout)["spans"] == sent["spans"]
        later = _push(home, "--remote", server.url, "--since", "2999-01-01", "--json")
        assert json.loads(later.stdout)["spans"] == 0
        time.sleep(1.0)  # let the server ingest what it had again
        assert same_history(Store(home), remote) == runs
    finally:
        stop(server)


@pytest.mark.slow
def test_spans_the_server_refuses_are_told_and_not_sent_again(tmp_path: Path) -> None:
    home = recorded_store(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CLI,
            "serve",
            "--home",
            str(tmp_path / "server"),
            "--port",
            str(port),
            "--max-attributes",
            "12",
        ],
        env={**os.environ, "CODETAPE_TOKEN": TOKEN},
        stderr=subprocess.PIPE,
    )
    server = Server(f"http://127.0.0.1:{port}", port, tmp_path / "server", process)
    try:
        wait_for(lambda: _healthy(server), "codetape serve did not answer /healthz")
        first = _push(home, "--remote", server.url, "--json")
        assert first.returncode == 1
        sent = json.loads(first.stdout)
        assert sent["refused_spans"] > 0
        assert "attributes" in first.stderr
        assert "at most 12 are accepted" in first.stderr
        second = _push(home, "--remote", server.url, "--json")
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["refused_spans"] == 0  # not sent again
        cursor = json.loads(next((home / "ship").glob("*.json")).read_text())
        assert cursor["refusals"]
        assert "at most 12" in cursor["refusals"][0]["message"]
    finally:
        stop(server)


def _healthy(server: Server) -> bool:
    try:
        return server.request("GET", "/healthz")[0] == 200
    except OSError:
        return False


def test_a_remote_that_is_not_http_is_refused(tmp_path: Path) -> None:
    import codetape
    from codetape.errors import ConfigError

    with pytest.raises(ConfigError, match="is not an http"):
        codetape.configure(home=tmp_path, otlp=False, remote="ftp://codetape.internal")


# -- retries ------------------------------------------------------------------------------


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next status of the server's ``script`` (then 200)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        server: Any = self.server
        server.seen.append((self.headers.get("Authorization"), self.path))
        status, retry_after = server.script.pop(0) if server.script else (200, None)
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        body = json.dumps({"code": status, "message": f"scripted {status}"}).encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[Any]:
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    server.seen, server.script = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _client(server: Any) -> Client:
    return Client(f"http://127.0.0.1:{server.server_address[1]}", "tok")


def test_unavailable_and_too_many_requests_are_retried_as_told(flaky: Any) -> None:
    flaky.script = [(503, "0"), (429, "0"), (502, None), (408, "0")]
    answer = _client(flaky).call("POST", "/v1/traces", Budget(), b"x")
    assert answer.status_code == 200
    assert flaky.seen == [("Bearer tok", "/v1/traces")] * 5


def test_a_refusal_is_answered_at_once_and_a_bad_token_stops(flaky: Any) -> None:
    flaky.script = [(413, None), (401, None)]
    client = _client(flaky)
    assert client.call("POST", "/v1/traces", Budget(), b"x").status_code == 413
    with pytest.raises(Fatal, match="refused the token"):
        client.call("POST", "/v1/traces", Budget(), b"x")
    assert len(flaky.seen) == 2


def test_retrying_stops_when_the_budget_is_spent(flaky: Any) -> None:
    flaky.script = [(503, "60")] * 3
    with pytest.raises(GaveUp, match="answered 503: scripted 503"):
        _client(flaky).call("POST", "/v1/traces", Budget(until=time.monotonic() + 5), b"x")
    assert len(flaky.seen) == 1  # a Retry-After past the budget is not waited for


@pytest.mark.slow
def test_small_chunks_keep_each_blob_ahead_of_its_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With chunks far smaller than a line, every line is a chunk of its own (or more):
    what arrives is still the whole history, each blob before the span naming it."""
    from codetape.store import _ship
    from codetape.store.internal import Shipper

    home = recorded_store(tmp_path)
    monkeypatch.setattr(_ship, "CHUNK_BYTES", 64)
    server = serve(tmp_path / "server", free_port())
    try:
        stats = Shipper(home, server.url, TOKEN).ship()
        assert stats.refusals == []
        remote = Store(server.home)
        local = Store(home)
        wait_for(lambda: len(run_ids(remote)) == 2, "the shipped runs did not arrive")
        runs = same_history(local, remote)
        assert blobs_verified(local, remote, runs) > 5
        assert Shipper(home, server.url, TOKEN).ship().spans == 0
    finally:
        stop(server)


@pytest.mark.slow
def test_two_processes_of_one_store_ship_each_span_once(tmp_path: Path) -> None:
    """Both ship every spool file of the store, one at a time: neither sends what the
    other has sent."""
    home = tmp_path / "agent"
    server = serve(tmp_path / "server", free_port())
    try:
        both = [child(home, "ship", CODETAPE_REMOTE=server.url) for _ in range(2)]
        for process in both:
            finished(process)
        local, remote = Store(home), Store(server.home)
        runs = run_ids(local)
        assert len(runs) == 4
        wait_for(lambda: set(run_ids(remote)) == set(runs), "the runs did not arrive")
        same_history(local, remote)
        assert spooled_spans(server.home, runs) == spooled_spans(home, runs)
    finally:
        stop(server)
