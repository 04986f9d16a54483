"""The one exception tree of codetape.

Every error codetape raises on purpose is a :class:`CodetapeError`. Exceptions carry
fields, not only text, so callers can act on them::

    CodetapeError
    ├── ConfigError              bad configuration (home, OTLP endpoint, protocol)
    ├── AmbiguousRunIdError      a run id prefix matches more than one run
    ├── SandboxError             the sandbox cannot start or lost its runner
    │   ├── DockerUnavailableError   no Docker engine answers
    │   └── ImageNotFoundError       the sandbox image is not in Docker
    ├── CodeActionError          a code action failed, told to a framework that
    │                            expects an exception (smolagents' executor raises
    │                            one that is also smolagents' AgentExecutionError)
    ├── ShipError                a server refused what was shipped to it (the
    │                            token), or could not be reached in time
    ├── ReplayError              a replay could not go on
    │   └── ReplayToolError      a replayed step called a tool the recording has no
    │                            answer for
    └── StoreError               anything about the store directory
        ├── CorruptStoreError    the DuckDB file cannot be opened as a database
        ├── NewerStoreError      the store was written by a newer codetape
        ├── StoreBusyError       another process held the store for too long
        ├── SqlError             a query (Store.sql, codetape sql) was refused or failed
        └── NotFoundError        a run, step or blob is not in the store
            ├── RunNotFoundError
            ├── StepNotFoundError
            └── BlobNotFoundError

Who catches them: the CLI turns each into one line, its hint and an exit code; the
viewer shows one as an error box on the page that asked; ``codetape doctor`` reports
one as a failed check; ``replay`` turns a missing Docker engine or image into the
``environment_missing`` verdict. Everything else lets them reach the caller.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AmbiguousRunIdError",
    "BlobNotFoundError",
    "CodeActionError",
    "CodetapeError",
    "ConfigError",
    "CorruptStoreError",
    "DockerUnavailableError",
    "ImageNotFoundError",
    "NewerStoreError",
    "NotFoundError",
    "ReplayError",
    "ReplayToolError",
    "RunNotFoundError",
    "SandboxError",
    "ShipError",
    "SqlError",
    "StepNotFoundError",
    "StoreBusyError",
    "StoreError",
]


class CodetapeError(Exception):
    """Base class of every error codetape raises on purpose.

    ``hint`` says what the user can do about it; the CLI prints it on its own line.
    """

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        # Not super(): an error of an integration may also derive from its framework's
        # error, whose constructor takes other arguments (smolagents' AgentError).
        Exception.__init__(self, message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(CodetapeError):
    """The configuration cannot work (bad home directory, unknown OTLP protocol...)."""


class SandboxError(CodetapeError):
    """The sandbox could not start, or its runner broke the protocol."""

    exit_code = 5


class DockerUnavailableError(SandboxError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"no Docker engine answers: {reason}",
            hint="start Docker (Debian: apt-get install docker.io && dockerd &), or use "
            "Sandbox(backend='local') to run without isolation",
        )


class ImageNotFoundError(SandboxError):
    def __init__(self, image: str, repo_digests: list[str] | None = None) -> None:
        if repo_digests:
            how = f"docker pull {repo_digests[0]}"
        else:
            how = (
                f"docker pull {image}; or, with no registry, build a minimal image with "
                "`codetape image build --offline` (codetape/python:bookworm; --include "
                "python3-numpy,... adds Debian packages) and export "
                "CODETAPE_IMAGE=codetape/python:bookworm; `codetape image build` makes one "
                "with your packages"
            )
        super().__init__(f"the sandbox image {image} is not in Docker", hint=how)
        self.image = image


class CodeActionError(CodetapeError):
    """A code action failed in the sandbox: raised to an agent framework whose executor
    contract expects an exception for a failed action. The step is recorded (``run_id``
    and ``step`` say where); ``error_type`` is the error's type as the code raised it,
    and the message ends with the code's traceback."""

    def __init__(
        self,
        status: str,
        error_type: str | None,
        message: str,
        *,
        traceback: str | None = None,
        run_id: str | None = None,
        step: int | None = None,
    ) -> None:
        described = f"{error_type}: {message}" if error_type else message or status
        if traceback and traceback.strip():
            described += "\n" + traceback.rstrip()
        super().__init__(f"Code execution failed ({status}): {described}")
        self.status = status
        self.error_type = error_type
        self.error_message = message
        self.traceback = traceback
        self.run_id = run_id
        self.step = step


class ShipError(CodetapeError):
    """Shipping a store to ``codetape serve`` could not go on: the server refused the
    token, or could not be reached in the time allowed. Nothing is lost: what was not
    acknowledged stays in the spool for the next attempt."""


class ReplayError(CodetapeError):
    """A replay could not go on."""


class ReplayToolError(ReplayError):
    """A replayed step called a tool the recording has no answer for (raised inside the
    replayed code, where it is the tool call's error)."""


class StoreError(CodetapeError):
    """A problem with the store directory."""

    exit_code = 3

    def __init__(self, message: str, *, path: Path | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class CorruptStoreError(StoreError):
    """The DuckDB file exists but is not a readable codetape database."""


class NewerStoreError(StoreError):
    """The store's schema version is newer than this codetape understands."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        super().__init__(
            f"store {path} has schema version {found}, newer than the {supported} this "
            "codetape understands",
            path=path,
            hint="upgrade codetape (pip install -U codetape) to read it",
        )
        self.found = found
        self.supported = supported


class StoreBusyError(StoreError):
    """Another process kept the DuckDB file locked longer than we were willing to wait."""


class SqlError(StoreError):
    """A query of the store's SQL views was refused (it is not one read-only statement,
    or it would read or write files) or DuckDB could not run it. ``reason`` is DuckDB's
    message or why the query was refused; ``refused`` says which."""

    exit_code = 2

    def __init__(self, reason: str, *, refused: bool, views: tuple[str, ...] = ()) -> None:
        what = "query refused" if refused else "query failed"
        hint = "`codetape sql --examples` shows worked queries; docs/sql.md has every column"
        if views:
            hint = f"the views are {', '.join(views)}; " + hint
        super().__init__(f"{what}: {reason}", hint=hint)
        self.reason = reason
        self.refused = refused


class NotFoundError(StoreError):
    """Something asked for is not in the store."""

    exit_code = 4


class RunNotFoundError(NotFoundError):
    def __init__(self, run_id: str, path: Path | None = None) -> None:
        super().__init__(
            f"no run {run_id!r} in the store" + (f" at {path}" if path else ""),
            path=path,
            hint="`codetape runs` lists the recorded runs; `--home` picks another store",
        )
        self.run_id = run_id


class AmbiguousRunIdError(CodetapeError):
    def __init__(self, prefix: str, matches: list[str]) -> None:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        super().__init__(
            f"run id prefix {prefix!r} is ambiguous: it matches {shown}",
            hint="type more characters of the run id",
        )
        self.prefix = prefix
        self.matches = matches


class StepNotFoundError(NotFoundError):
    def __init__(self, run_id: str, index: int, available: list[int]) -> None:
        have = f"steps {available[0]}..{available[-1]}" if available else "no steps"
        super().__init__(
            f"run {run_id} has no step {index} (it has {have})",
            hint=f"`codetape show {run_id[:12]}` lists its steps",
        )
        self.run_id = run_id
        self.index = index


class BlobNotFoundError(NotFoundError):
    def __init__(self, digest: str, path: Path | None = None) -> None:
        super().__init__(
            f"no blob {digest} in the store" + (f" at {path}" if path else ""),
            path=path,
            hint="the blob folder may have been pruned or copied only in part",
        )
        self.digest = digest
