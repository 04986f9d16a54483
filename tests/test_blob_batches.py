"""Blobs in batches: ``POST /v1/blobs/missing`` says which of a list of digests the
server lacks, ``POST /v1/blobs`` stores many blobs in one request, every one verified
before any is stored. ``codetape push`` and the shipper use them, and fall back to a
``HEAD`` and a ``PUT`` a blob against a server without them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codetape import Store
from codetape.server import Limits

from .test_serve import TOKEN, Server, free_port, start, stop
from .test_ship import WAIT_S, blobs_verified, recorded_store, run_ids, same_history

_D = re.compile(r"sha256:[0-9a-f]{64}")


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def frames(*blobs: tuple[str, bytes]) -> bytes:
    return b"".join(b"%s %d\n%s" % (d.encode(), len(data), data) for d, data in blobs)


def missing(server: Server, digests: list[str], token: str | None = TOKEN) -> tuple[int, Any]:
    status, answer = server.request(
        "POST",
        "/v1/blobs/missing",
        json.dumps({"digests": digests}).encode(),
        {"Content-Type": "application/json"},
        token=token,
    )
    return status, json.loads(answer)


def post_batch(server: Server, body: bytes, token: str | None = TOKEN) -> tuple[int, Any]:
    status, answer = server.request("POST", "/v1/blobs", body, token=token)
    return status, json.loads(answer)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start(tmp_path / "server", "--max-body-mb", "2")
    try:
        yield running
    finally:
        stop(running)


def test_a_batch_is_stored_and_missing_says_what_the_server_lacks(server: Server) -> None:
    small = [b"print('step %d')" % i for i in range(50)]
    large = os.urandom(300_000)  # over the size the server also spools
    blobs = [(digest(data), data) for data in [*small, large]]
    names = [d for d, _ in blobs]
    status, answer = missing(server, names)
    assert (status, sorted(answer["missing"])) == (200, sorted(names))

    status, answer = post_batch(server, frames(*blobs[:30]))
    assert (status, answer) == (201, {"stored": 30, "present": 0})
    assert sorted(missing(server, names)[1]["missing"]) == sorted(names[30:])

    status, answer = post_batch(server, frames(*blobs[25:]))  # five of them again
    assert (status, answer) == (201, {"stored": 21, "present": 5})
    assert missing(server, names)[1]["missing"] == []
    for name, data in blobs:
        assert server.request("GET", f"/v1/blobs/{name}") == (200, data)
        assert server.request("HEAD", f"/v1/blobs/{name}")[0] == 200


def test_a_batch_with_one_forged_blob_stores_nothing(server: Server) -> None:
    good = [(digest(b"good %d" % i), b"good %d" % i) for i in range(5)]
    forged = (digest(b"what it claims"), b"what it is")
    status, answer = post_batch(server, frames(*good[:3], forged, *good[3:]))
    assert status == 400
    assert forged[0] in answer["message"]
    assert "nothing of this batch was stored" in answer["message"]
    names = [d for d, _ in [*good, forged]]
    assert sorted(missing(server, names)[1]["missing"]) == sorted(names)
    assert not list((server.home / "blobs").glob("*/*"))


@pytest.mark.parametrize(
    "body",
    [
        frames((digest(b"abc"), b"abc")) + b"sha256:beef 3\nabc",
        frames((digest(b"abc"), b"abc"))[:-1],  # the last frame past the body
        b"",
    ],
    ids=["malformed", "past-the-body", "empty"],
)
def test_a_malformed_batch_is_400_and_stores_nothing(server: Server, body: bytes) -> None:
    status, answer = post_batch(server, body)
    assert status == 400
    assert answer["message"]
    assert missing(server, [digest(b"abc")])[1]["missing"] == [digest(b"abc")]


def test_limits_and_the_token(server: Server) -> None:
    data = os.urandom(1024 * 1024)
    body = frames((digest(data), data), (digest(data[::-1]), data[::-1]), (digest(b"x"), b"x"))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.putrequest("POST", "/v1/blobs")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", str(len(body)))  # over the 2 MB this server takes
    conn.endheaders()
    with contextlib.suppress(OSError):  # the server may answer and close before the end
        conn.send(body)
    answer = conn.getresponse()
    assert answer.status == 413
    assert "bytes" in json.loads(answer.read())["message"]
    conn.close()
    assert missing(server, [digest(data), digest(b"x")])[1]["missing"] == [
        digest(data),
        digest(b"x"),
    ]

    status, answer = missing(server, [digest(b"x")] * 10_001)
    assert status == 413
    assert "at most 10000" in answer["message"]
    assert missing(server, ["sha256:nothex"])[0] == 400
    assert server.request("POST", "/v1/blobs/missing", b"[1, 2")[0] == 400

    assert post_batch(server, frames((digest(b"x"), b"x")), token=None)[0] == 401
    assert missing(server, [digest(b"x")], token="wrong")[0] == 401
    assert missing(server, [digest(b"x")])[1]["missing"] == [digest(b"x")]


# -- the shipper ---------------------------------------------------------------------------


class _Seen:
    """ASGI middleware: the method and path of every request, kept in order."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    return recorded_store(tmp_path)


def _in_process(
    home: Path, batches: bool, limits: Limits | None = None
) -> tuple[Any, _Seen, str, threading.Thread]:
    """``codetape serve``'s application in this process (uvicorn on a thread); without
    ``batches``, as a server from before the batch endpoints: they answer 404/405."""
    import uvicorn
    from starlette.routing import Route

    from codetape.server._app import ServerSettings, create_app

    app = create_app(ServerSettings(home=home, token=TOKEN, limits=limits or Limits()))
    if not batches:
        inner = app.app  # type: ignore[attr-defined]  # the Starlette app inside the auth
        inner.router.routes = [
            r
            for r in inner.router.routes
            if not (isinstance(r, Route) and r.path in ("/v1/blobs", "/v1/blobs/missing"))
        ]
    seen = _Seen(app)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(seen, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    return server, seen, f"http://127.0.0.1:{port}", thread


@pytest.mark.slow
@pytest.mark.parametrize("batches", [True, False], ids=["batches", "older-server"])
def test_shipping_through_batches_or_one_by_one_gives_the_same_store(
    recorded: Path, tmp_path: Path, batches: bool
) -> None:
    from codetape.store.internal import Shipper

    server, seen, url, thread = _in_process(tmp_path / "server", batches)
    try:
        stats = Shipper(recorded, url, TOKEN, parallel=4).ship()
        assert stats.refusals == []
        assert stats.blobs_sent > 5
        again = Shipper(recorded, url, TOKEN).ship()
        assert (again.spans, again.blobs_sent) == (0, 0)
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
    methods = {(method, path.rsplit("/", 1)[0]) for method, path in seen.requests}
    if batches:
        assert ("POST", "/v1/blobs") in methods  # the batch
        assert ("POST", "/v1/blobs/missing") in seen.requests
        assert ("HEAD", "/v1/blobs") not in methods
    else:
        assert ("HEAD", "/v1/blobs") in methods
        assert ("PUT", "/v1/blobs") in methods
        # Asked once, answered 405: then a HEAD and a PUT a blob.
        assert seen.requests.count(("POST", "/v1/blobs/missing")) == 1
        assert ("POST", "/v1/blobs") not in seen.requests
    local, remote = Store(recorded), Store(tmp_path / "server")
    assert len(run_ids(remote)) == 2
    runs = same_history(local, remote)
    assert blobs_verified(local, remote, runs) > 5


@pytest.mark.slow
def test_a_batch_the_server_refuses_is_sent_blob_by_blob(
    recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that takes smaller bodies than a batch (413): each of its blobs alone,
    so only those over the server's limit are refused (and told); the rest arrive."""
    from codetape.store import _ship
    from codetape.store.internal import Shipper

    limit = 150_000
    monkeypatch.setattr(_ship, "BATCH_BYTES", 8 * 1024 * 1024)
    monkeypatch.setattr(_ship, "BATCH_ALONE_BYTES", 8 * 1024 * 1024)
    server, seen, url, thread = _in_process(tmp_path / "server", True, Limits(body_bytes=limit))
    try:
        stats = Shipper(recorded, url, TOKEN).ship()
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
    too_large = {
        f"sha256:{p.parent.name}{p.name}"
        for p in (recorded / "blobs").glob("*/*")
        if p.stat().st_size > limit
    }
    assert too_large
    assert stats.refused_blobs == len(too_large)
    assert all(" refused: 413 " in message for message in stats.refusals)
    assert {m.split()[1] for m in stats.refusals} == too_large
    first = seen.requests.index(("POST", "/v1/blobs"))
    assert any(method == "PUT" for method, _ in seen.requests[first:])
    local, remote = Store(recorded), Store(tmp_path / "server")
    runs = same_history(local, remote)
    named = {
        m for (a,) in local.sql("SELECT attributes FROM spans").fetchall() for m in _D.findall(a)
    }
    for name in named - too_large:
        try:
            data = local.blob(name)
        except Exception:  # a digest that names no blob (an environment fingerprint)
            continue
        assert remote.blob(name) == data
    assert len(runs) == 2
