"""``RemoteStore``: the read API of ``Store`` over a ``codetape serve``'s read endpoints
(docs/server.md, "Reading a shared history"), for ``codetape --remote URL`` and
``codetape ui --remote URL``.

Each read is one HTTP request answered from the server's own store; its answer is the
JSON of the same pydantic models ``Store`` returns (an SQL answer: Parquet). Errors the
server's store raised come back as the same ``CodetapeError`` classes, with the same
message and hint; an unreachable or refusing server is a ``RemoteStoreError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from pydantic import TypeAdapter

from .. import errors
from ..errors import CodetapeError, StoreError
from ..schemas import FailureGroup, LlmCall, Run, RunDetail, RunDiff, Step
from ._read import Store
from ._sql import Params

__all__ = ["REMOTE_ENV", "TOKEN_ENV", "RemoteStore", "RemoteStoreError", "read_token"]

REMOTE_ENV = "CODETAPE_REMOTE"
TOKEN_ENV = "CODETAPE_TOKEN"
_TIMEOUT_S = 60.0
_T = TypeVar("_T")

_RUNS: TypeAdapter[list[Run]] = TypeAdapter(list[Run])
_STEPS: TypeAdapter[list[Step]] = TypeAdapter(list[Step])
_CALLS: TypeAdapter[list[LlmCall]] = TypeAdapter(list[LlmCall])
_GROUPS: TypeAdapter[list[FailureGroup]] = TypeAdapter(list[FailureGroup])


class RemoteStoreError(StoreError):
    """A ``codetape serve`` could not be read: unreachable, refusing the token, or
    answering what is not codetape's read API."""


def read_token(token_file: Path | None = None) -> str | None:
    """The bearer token for the server: the first line of ``token_file``, else
    ``$CODETAPE_TOKEN``; None when neither is set (a server run with
    ``--insecure-no-auth``)."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise errors.ConfigError(
                f"cannot read the token file {token_file}: {exc.strerror}"
            ) from None
        if not token:
            raise errors.ConfigError(f"the token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


def _checked_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise errors.ConfigError(
            f"--remote {url!r} is not a server address",
            hint="give the address codetape serve listens on, e.g. http://host:4318",
        )
    return url.strip().rstrip("/")


def _rebuilt(payload: Any, status: int) -> CodetapeError:
    """The error the server's store raised, as the same class (its message and hint)."""
    found = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(found, dict):
        message = payload.get("message") if isinstance(payload, dict) else None
        return RemoteStoreError(f"the server answered {status}: {message or 'no reason given'}")
    cls = getattr(errors, str(found.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, CodetapeError)):
        cls = StoreError
    exc = cls.__new__(cls)
    CodetapeError.__init__(exc, str(found.get("message", "")), hint=found.get("hint"))
    # Its own fields (an SqlError's reason, a RunNotFoundError's run id...), which a
    # caller reads; not its constructor, whose arguments differ from class to class.
    fields = found.get("attributes")
    for name, value in (fields if isinstance(fields, dict) else {}).items():
        if isinstance(name, str) and name.isidentifier() and not name.startswith("_"):
            setattr(exc, name, value)
    return exc


class RemoteStore(Store):
    """``Store``'s reads, answered by a ``codetape serve`` at ``url``.

    >>> store = RemoteStore("https://codetape.internal:4318", token="…")  # doctest: +SKIP
    >>> store.runs(failed=True)                                          # doctest: +SKIP
    """

    def __init__(self, url: str, token: str | None = None) -> None:
        # Not Store.__init__: there is no local store directory.
        self.url = _checked_url(url)
        self.token = token
        self.archive = False
        self.last_ingest = None
        self.ingest_problem = None
        self._blob_cache: dict[str, bytes] = {}
        self._searches = {}
        self._read_blobs = True
        self._session = None
        self._context = ssl.create_default_context()

    # Anything that needs the store's files (replays, doctor, Parquet export) asks for
    # ``home``: say that it is not here, rather than read a local store by mistake.
    @property
    def home(self) -> Path:
        raise RemoteStoreError(
            f"this needs a store on this machine, and {self.url} is a codetape serve",
            hint="run it on the server's machine, or export the run (codetape --remote URL "
            "export RUN -o F) and import it here",
        )

    @home.setter
    def home(self, value: Path) -> None:
        raise AttributeError("a RemoteStore has no local home")

    # -- HTTP -------------------------------------------------------------------

    def _request(
        self, path: str, params: dict[str, Any] | None = None, body: Any = None
    ) -> tuple[bytes, str]:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
        if self.token:
            # Not sent again to wherever a redirect points (another host, plain http).
            request.add_unredirected_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S, context=self._context) as r:
                return r.read(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteStoreError(
                f"cannot reach the codetape server at {self.url}: {reason}",
                hint="check the address and that codetape serve runs there "
                "(codetape serve --host 0.0.0.0 --port 4318 on the server)",
            ) from None

    def _refused(self, exc: urllib.error.HTTPError) -> CodetapeError:
        raw = exc.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if exc.code == 401:
            given = "without a token" if not self.token else "with a token it does not accept"
            return RemoteStoreError(
                f"the codetape server at {self.url} refused a request {given}",
                hint="set CODETAPE_TOKEN (or --token-file F) to the server's token",
            )
        if exc.code in (404, 405) and not (isinstance(payload, dict) and "error" in payload):
            return RemoteStoreError(
                f"{self.url} does not answer codetape's read API ({exc.code} for {exc.url})",
                hint="point --remote at a codetape serve of this codetape version",
            )
        return _rebuilt(payload, exc.code)

    def _get(self, path: str, adapter: TypeAdapter[_T], **params: Any) -> _T:
        body, _ = self._request(path, params)
        return adapter.validate_json(body)

    @staticmethod
    def _q(run_id: str) -> str:
        return urllib.parse.quote(run_id, safe="")

    # -- the reads --------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.home

    def refresh(self) -> None:
        """The server ingests as it receives: nothing to do here."""
        return None

    @contextlib.contextmanager
    def session(self) -> Iterator[Store]:
        yield self

    def sql(self, query: str, params: Params = None) -> duckdb.DuckDBPyRelation:
        body, _ = self._request("/v1/sql", body={"query": query, "params": params})
        with tempfile.TemporaryDirectory(prefix="codetape-sql-") as folder:
            path = Path(folder) / "answer.parquet"
            path.write_bytes(body)
            con = duckdb.connect(":memory:")
            con.execute("CREATE TABLE answer AS FROM read_parquet(?)", [str(path)])
        return con.sql("FROM answer")

    def blob(self, digest: str) -> bytes:
        found = self._blob_cache.get(digest)
        if found is not None:
            return found
        body, _ = self._request(f"/v1/blobs/{self._q(digest)}")
        return body

    def blobs_of(self, digests: Iterable[str]) -> dict[str, bytes]:
        found = {}
        for digest in sorted(set(digests)):
            with contextlib.suppress(errors.BlobNotFoundError):
                found[digest] = self.blob(digest)
        return found

    def runs(
        self,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 100,
        *,
        failed: bool = False,
        offset: int = 0,
        search: str | None = None,
        replaying: str | None = None,
    ) -> list[Run]:
        return self._get(
            "/v1/runs",
            _RUNS,
            status=status,
            agent=agent,
            limit=limit,
            failed=int(failed),
            offset=offset,
            search=search,
            replaying=replaying,
        )

    def count_runs(
        self,
        status: str | None = None,
        agent: str | None = None,
        *,
        failed: bool = False,
        search: str | None = None,
        at_most: int | None = None,
    ) -> int:
        return self._get(
            "/v1/runs/count",
            TypeAdapter(int),
            status=status,
            agent=agent,
            failed=int(failed),
            search=search,
            at_most=at_most,
        )

    def agents(self) -> list[str]:
        return self._get("/v1/agents", TypeAdapter(list[str]))

    def resolve_run_id(self, run_id: str) -> str:
        return self.run(run_id).id

    def run(self, run_id: str) -> Run:
        return self._get(f"/v1/runs/{self._q(run_id)}", TypeAdapter(Run))

    def detail(self, run_id: str) -> RunDetail:
        return self._get(f"/v1/runs/{self._q(run_id)}/detail", TypeAdapter(RunDetail))

    def llm_calls(self, run_id: str, *, messages: bool = True) -> list[LlmCall]:
        return self._get(f"/v1/runs/{self._q(run_id)}/llm_calls", _CALLS, messages=int(messages))

    def llm_call(self, run_id: str, span_id: str) -> LlmCall:
        path = f"/v1/runs/{self._q(run_id)}/llm_calls/{self._q(span_id)}"
        return self._get(path, TypeAdapter(LlmCall))

    def failures(self, agent: str | None = None) -> list[FailureGroup]:
        return self._get("/v1/failures", _GROUPS, agent=agent)

    def steps(
        self, run_id: str, start: int = 0, limit: int | None = None, *, contents: bool = True
    ) -> list[Step]:
        if start < 0 or (limit is not None and limit < 0):
            raise ValueError(f"start and limit must not be negative, not {start}, {limit}")
        return self._get(
            f"/v1/runs/{self._q(run_id)}/steps",
            _STEPS,
            start=start,
            limit=limit,
            contents=int(contents),
        )

    def step(self, run_id: str, index: int) -> Step:
        return self._get(f"/v1/runs/{self._q(run_id)}/steps/{int(index)}", TypeAdapter(Step))

    def step_codes(self, *run_ids: str) -> dict[str, str]:
        return self._get("/v1/step_codes", TypeAdapter(dict[str, str]), run=list(run_ids))

    def counts(self) -> dict[str, int]:
        return self._get("/v1/counts", TypeAdapter(dict[str, int]))

    def lost_records(self, limit: int = 5) -> list[dict[str, Any]]:
        return self._get("/v1/lost_records", TypeAdapter(list[dict[str, Any]]), limit=limit)

    # -- what the server computes whole -----------------------------------------

    def diff(self, a: str, b: str) -> RunDiff:
        """``diff_runs(a, b)`` on the server's store."""
        return self._get("/v1/diff", TypeAdapter(RunDiff), a=a, b=b)

    def bundle(self, run_id: str) -> bytes:
        """The bytes of ``export_run(run_id)`` on the server (without images)."""
        body, _ = self._request(f"/v1/runs/{self._q(run_id)}/bundle")
        return body

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise RemoteStoreError(
            f"this reads the store's tables directly, which {self.url} does not serve",
            hint="run it on the server's machine",
        )
