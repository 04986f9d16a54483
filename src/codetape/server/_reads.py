"""The read API of ``codetape serve``: what ``RemoteStore`` (``codetape --remote URL``,
``codetape ui --remote URL``) asks, answered from the server's own store.

Each request opens a ``Store`` on the server's store directory, which catches up with
what was received and not yet ingested, exactly as a local read does. Answers are the
JSON of the models ``Store`` returns; an SQL answer is Parquet; a bundle is the file
``codetape export`` writes. An error of the store is answered with its class, message
and hint, so the client raises the same error a local read would.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import AmbiguousRunIdError, CodetapeError, NotFoundError, SqlError
from ..store import Store

__all__ = ["read_routes"]

_MAX_LIMIT = 100_000
_SQL_BODY_BYTES = 1 << 20  # a query and its parameters


class _BadQuery(ValueError):
    pass


def _int(request: Request, name: str, default: int | None) -> int | None:
    given = request.query_params.get(name)
    if given is None or given == "":
        return default
    try:
        value = int(given)
    except ValueError:
        raise _BadQuery(f"{name}={given[:40]!r} is not a whole number") from None
    if not 0 <= value <= _MAX_LIMIT:
        raise _BadQuery(f"{name}={value} is out of range (0 to {_MAX_LIMIT})")
    return value


def _flag(request: Request, name: str, default: bool) -> bool:
    value = _int(request, name, int(default))
    return bool(value)


def _status_of(exc: CodetapeError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, (AmbiguousRunIdError, SqlError)):
        return 400
    return 500


def _failed(status: int, exc: CodetapeError | None, message: str) -> JSONResponse:
    body: dict[str, Any] = {"code": status, "message": message}
    if exc is not None:
        body["error"] = {
            "type": type(exc).__name__,
            "message": exc.message,
            "hint": exc.hint,
            "attributes": _attributes(exc),
        }
    return JSONResponse(body, status)


def _attributes(exc: CodetapeError) -> dict[str, Any]:
    """The error's own fields (``SqlError.reason``, ``RunNotFoundError.run_id``...), for
    the client to rebuild it whole: plain values only, paths as text."""
    found: dict[str, Any] = {}
    for name, value in vars(exc).items():
        if name in ("message", "hint") or name.startswith("_"):
            continue
        if isinstance(value, Path):
            value = str(value)
        if value is None or isinstance(value, (str, int, float, bool, list)):
            found[name] = value
    return found


class _Reads:
    def __init__(self, home: Path) -> None:
        self.home = home

    async def _answer(self, read: Callable[[Store], Any]) -> Response:
        def call() -> Any:
            return read(Store(self.home))

        try:
            value = await run_in_threadpool(call)
        except CodetapeError as exc:
            return _failed(_status_of(exc), exc, exc.message)
        if isinstance(value, Response):
            return value
        return Response(to_json(value), 200, media_type="application/json")

    async def _guarded(self, request: Request, handler: Callable[[Request], Any]) -> Response:
        try:
            read = handler(request)
        except _BadQuery as exc:
            return _failed(400, None, str(exc))
        answer: Response = await self._answer(read)
        return answer

    # -- the endpoints -----------------------------------------------------------

    async def runs(self, request: Request) -> Response:
        def parse(r: Request) -> Callable[[Store], Any]:
            q = r.query_params
            limit, offset = _int(r, "limit", 100), _int(r, "offset", 0)
            failed = _flag(r, "failed", False)
            return lambda s: s.runs(
                q.get("status"),
                q.get("agent"),
                limit or 0,
                failed=failed,
                offset=offset or 0,
                search=q.get("search"),
                replaying=q.get("replaying"),
            )

        return await self._guarded(request, parse)

    async def count_runs(self, request: Request) -> Response:
        def parse(r: Request) -> Callable[[Store], Any]:
            q = r.query_params
            failed, at_most = _flag(r, "failed", False), _int(r, "at_most", None)
            return lambda s: s.count_runs(
                q.get("status"), q.get("agent"), failed=failed, search=q.get("search"),
                at_most=at_most,
            )  # fmt: skip

        return await self._guarded(request, parse)

    async def agents(self, request: Request) -> Response:
        return await self._answer(lambda s: s.agents())

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return await self._answer(lambda s: s.run(run_id))

    async def detail(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return await self._answer(lambda s: s.detail(run_id))

    async def steps(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]

        def parse(r: Request) -> Callable[[Store], Any]:
            start, limit = _int(r, "start", 0), _int(r, "limit", None)
            contents = _flag(r, "contents", True)
            return lambda s: s.steps(run_id, start or 0, limit, contents=contents)

        return await self._guarded(request, parse)

    async def step(self, request: Request) -> Response:
        run_id, index = request.path_params["run_id"], request.path_params["index"]
        return await self._answer(lambda s: s.step(run_id, index))

    async def llm_calls(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]

        def parse(r: Request) -> Callable[[Store], Any]:
            messages = _flag(r, "messages", True)
            return lambda s: s.llm_calls(run_id, messages=messages)

        return await self._guarded(request, parse)

    async def llm_call(self, request: Request) -> Response:
        run_id, span_id = request.path_params["run_id"], request.path_params["span_id"]
        return await self._answer(lambda s: s.llm_call(run_id, span_id))

    async def step_codes(self, request: Request) -> Response:
        run_ids = request.query_params.getlist("run")
        return await self._answer(lambda s: s.step_codes(*run_ids))

    async def failures(self, request: Request) -> Response:
        agent = request.query_params.get("agent")
        return await self._answer(lambda s: s.failures(agent))

    async def counts(self, request: Request) -> Response:
        return await self._answer(lambda s: s.counts())

    async def lost_records(self, request: Request) -> Response:
        def parse(r: Request) -> Callable[[Store], Any]:
            limit = _int(r, "limit", 5)
            return lambda s: s.lost_records(limit or 0)

        return await self._guarded(request, parse)

    async def diff(self, request: Request) -> Response:
        from ..replayer import diff_runs

        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        if not a or not b:
            return _failed(400, None, "give both runs: /v1/diff?a=RUN&b=RUN")
        return await self._answer(lambda s: diff_runs(a, b, home=s.home))

    async def bundle(self, request: Request) -> Response:
        from ..replayer import export_run

        run_id = request.path_params["run_id"]

        def write(store: Store) -> Response:
            with tempfile.TemporaryDirectory(prefix="codetape-bundle-") as folder:
                path = Path(folder) / "run.codetape"
                export_run(run_id, path, home=store.home)
                data = path.read_bytes()
            return Response(data, 200, media_type="application/gzip")

        return await self._answer(write)

    async def sql(self, request: Request) -> Response:
        from ..store.internal import run_sql

        body = bytearray()
        async for chunk in request.stream():  # a query, not a data upload: bounded
            body += chunk
            if len(body) > _SQL_BODY_BYTES:
                return _failed(413, None, f"the query is over {_SQL_BODY_BYTES} bytes")
        try:
            asked = json.loads(body)
        except ValueError:
            asked = None
        query = asked.get("query") if isinstance(asked, dict) else None
        params = asked.get("params") if isinstance(asked, dict) else None
        if not isinstance(query, str) or not isinstance(params, (list, dict, type(None))):
            return _failed(400, None, 'send {"query": "SELECT ...", "params": [...] or null}')

        def answer(store: Store) -> Response:
            store.refresh()
            with tempfile.TemporaryDirectory(prefix="codetape-sql-") as folder:
                path = Path(folder) / "answer.parquet"
                run_sql(store.home, query, params, parquet=path)
                data = path.read_bytes()
            return Response(data, 200, media_type="application/vnd.apache.parquet")

        return await self._answer(answer)

    async def blob(self, request: Request, digest: str) -> Response:
        def read(store: Store) -> Response:
            return Response(store.blob(digest), 200, media_type="application/octet-stream")

        return await self._answer(read)


def read_routes(home: Path) -> tuple[list[Route], Callable[[Request, str], Any]]:
    """The read endpoints over the store at ``home``, and the handler of a blob's GET
    (its route is shared with the blob's PUT and HEAD)."""
    reads = _Reads(home)
    run = "/v1/runs/{run_id}"
    routes = [
        Route("/v1/runs", reads.runs, methods=["GET"]),
        Route("/v1/runs/count", reads.count_runs, methods=["GET"]),
        Route("/v1/agents", reads.agents, methods=["GET"]),
        Route("/v1/failures", reads.failures, methods=["GET"]),
        Route("/v1/step_codes", reads.step_codes, methods=["GET"]),
        Route("/v1/counts", reads.counts, methods=["GET"]),
        Route("/v1/lost_records", reads.lost_records, methods=["GET"]),
        Route("/v1/diff", reads.diff, methods=["GET"]),
        Route("/v1/sql", reads.sql, methods=["POST"]),
        Route(run, reads.run, methods=["GET"]),
        Route(run + "/detail", reads.detail, methods=["GET"]),
        Route(run + "/steps", reads.steps, methods=["GET"]),
        Route(run + "/steps/{index:int}", reads.step, methods=["GET"]),
        Route(run + "/llm_calls", reads.llm_calls, methods=["GET"]),
        Route(run + "/llm_calls/{span_id}", reads.llm_call, methods=["GET"]),
        Route(run + "/bundle", reads.bundle, methods=["GET"]),
    ]
    return routes, reads.blob
