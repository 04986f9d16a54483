"""No secrets at rest: what an agent prints, raises, passes or keeps never reaches the store.

Canary secrets are generated at runtime (secret-named environment variables and
well-known credential shapes), pushed through every field codetape records, and then
every byte of every file under the store directory is searched for them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

import codetape

ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Canaries:
    api_key: str  # env CANARY_API_KEY
    db_password: str  # env DB_PASSWORD
    openai: str
    aws: str
    github: str
    jwt: str
    pem: str
    url: str
    url_password: str

    def fragments(self) -> dict[str, str]:
        """The secret parts to search for: none of them may be at rest."""
        _, payload, signature = self.jwt.split(".")
        body = [line for line in self.pem.splitlines() if line and "-----" not in line]
        return {
            "env CANARY_API_KEY": self.api_key,
            "env DB_PASSWORD": self.db_password,
            "openai key": self.openai,
            "aws key": self.aws,
            "github token": self.github,
            "jwt payload": payload,
            "jwt signature": signature,
            **{f"pem line {i}": line for i, line in enumerate(body)},
            "url password": self.url_password,
        }


@pytest.fixture
def canaries(home: Path, monkeypatch: pytest.MonkeyPatch) -> Canaries:
    """Fresh secrets per test; the env ones are set *before* configure(), whose Redactor
    reads the environment when it is built."""
    api_key = "ck" + rand(38)
    db_password = rand(30)
    monkeypatch.setenv("CANARY_API_KEY", api_key)
    monkeypatch.setenv("DB_PASSWORD", db_password)
    pem_body = base64.b64encode(os.urandom(300)).decode()
    pem = (
        "-----BEGIN RSA PRIVATE KEY-----\n"
        + "\n".join(pem_body[i : i + 64] for i in range(0, len(pem_body), 64))
        + "\n-----END RSA PRIVATE KEY-----\n"
    )
    jwt = ".".join(
        [
            b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()),
            b64url(json.dumps({"sub": rand(20), "admin": True}).encode()),
            b64url(os.urandom(32)),
        ]
    )
    url_password = rand(24)
    return Canaries(
        api_key=api_key,
        db_password=db_password,
        openai="sk-proj-" + rand(48),
        aws="AKIA" + rand(16, string.ascii_uppercase + string.digits),
        github="ghp_" + rand(36),
        jwt=jwt,
        pem=pem,
        url=f"https://svc:{url_password}@db.internal.example:5432/orders",
        url_password=url_password,
    )


def store_files(home: Path) -> list[Path]:
    """Every file under the store: DuckDB (and its WAL), spool logs, blob files, temp files."""
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "codetape.duckdb" for p in files)
    assert any("spool" in p.parts for p in files)
    return files


def database_text(home: Path) -> str:
    """Everything in the DuckDB tables, decoded (the file itself may be compressed)."""
    con = duckdb.connect(str(home / "codetape.duckdb"), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SHOW TABLES").fetchall()]
        return "\n".join(repr(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)
    finally:
        con.close()


def leaks(home: Path, fragments: dict[str, str]) -> dict[str, list[str]]:
    """Where each fragment occurs at rest: {fragment label: [file, ...]}."""
    found: dict[str, list[str]] = {}
    codetape.Store(home).refresh()  # ingest whatever the spool holds
    for path in store_files(home):
        data = path.read_bytes()
        for label, fragment in fragments.items():
            if fragment.encode() in data:
                found.setdefault(label, []).append(str(path.relative_to(home)))
    decoded = database_text(home)
    for label, fragment in fragments.items():
        if fragment in decoded:
            found.setdefault(label, []).append("codetape.duckdb (decoded)")
    return found


# -- the recording -------------------------------------------------------------------


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> Any:
    exec(code, namespace)
    return namespace.get("result")


def record_leaky_agent(c: Canaries) -> str:
    """An agent that leaks every canary through every recorded field; returns its run id."""

    @codetape.tool
    def lookup(token: str, url: str) -> dict[str, str]:
        return {"echo": token, "dsn": url, "key": c.openai, "jwt": c.jwt}

    @codetape.agent(name="leaky-bot")
    def solve(task: str) -> str:
        ns: dict[str, Any] = {
            "lookup": lookup,
            "db_password": c.db_password,
            "config": {"aws": c.aws, "github": c.github},
            "pem": c.pem,
        }
        code = (
            f"api_key = {c.api_key!r}\n"
            f"print('using', api_key, {c.openai!r}, db_password)\n"
            "import sys\n"
            f"print('creds', {c.aws!r}, {c.url!r}, file=sys.stderr)\n"
            f"result = lookup(token={c.github!r}, url={c.url!r})\n"
        )
        execute(code, ns)
        with contextlib.suppress(PermissionError):
            execute(
                f"raise PermissionError('login failed for ' + db_password + ' with {c.jwt}')",
                ns,
            )
        return f"done: used {c.api_key} and {c.jwt}\n{c.pem}"

    solve(f"log in with {c.db_password} and {c.openai} at {c.url}")
    return codetape.Store().runs(agent="leaky-bot")[0].id


def test_no_secret_reaches_any_file_of_the_store(home: Path, canaries: Canaries) -> None:
    codetape.configure(home=home, otlp=False)  # after the canaries are in the environment
    record_leaky_agent(canaries)

    # An agent that raises with a secret in its message, too.
    with pytest.raises(PermissionError), codetape.run("raiser", task=canaries.github):
        raise PermissionError(f"token {canaries.api_key} rejected by {canaries.url}")

    assert leaks(home, canaries.fragments()) == {}


def test_markers_replace_the_secrets(home: Path, canaries: Canaries) -> None:
    c = canaries
    codetape.configure(home=home, otlp=False)
    run_id = record_leaky_agent(c)
    store = codetape.Store(home)
    run = store.run(run_id)
    step, failed = store.steps(run_id)

    assert "[REDACTED:env:CANARY_API_KEY]" in step.code
    assert "[REDACTED:openai_key]" in step.code
    assert "[REDACTED:github_token]" in step.code
    assert "[REDACTED:url_password]" in step.code
    assert step.stdout.startswith("using [REDACTED:env:CANARY_API_KEY] [REDACTED:openai_key]")
    assert "[REDACTED:env:DB_PASSWORD]" in step.stdout
    assert "[REDACTED:aws_access_key]" in step.stderr
    assert "https://svc:[REDACTED:url_password]@db.internal.example" in step.stderr

    [call] = step.tool_calls
    assert call.arguments == {
        "token": "[REDACTED:github_token]",
        "url": "https://svc:[REDACTED:url_password]@db.internal.example:5432/orders",
    }
    assert call.result["key"] == "[REDACTED:openai_key]"
    assert call.result["jwt"] == "[REDACTED:jwt]"
    assert step.result is not None
    assert "[REDACTED:github_token]" in step.result

    assert failed.error is not None
    assert "[REDACTED:env:DB_PASSWORD]" in failed.error.message
    assert "[REDACTED:jwt]" in failed.error.message
    assert failed.error.traceback is not None
    assert "[REDACTED:env:DB_PASSWORD]" in failed.error.traceback

    assert run.task is not None
    assert "[REDACTED:env:DB_PASSWORD]" in run.task
    assert "[REDACTED:openai_key]" in run.task
    assert run.final_answer is not None
    assert "[REDACTED:env:CANARY_API_KEY]" in run.final_answer
    assert "[REDACTED:private_key]" in run.final_answer

    # Variables holding a secret: shown redacted, value not stored, so not restorable.
    before, after = step.variables_before, step.variables_after
    for snap in (before["db_password"], before["config"], before["pem"], after["api_key"]):
        assert snap.restorable is False, snap
        assert snap.digest is None
        assert snap.reason
        assert "secret" in snap.reason
        assert "[REDACTED:" in snap.preview
    assert before["db_password"].preview == "'[REDACTED:env:DB_PASSWORD]'"
    assert after["result"].restorable is False


def test_redact_false_stores_the_secrets(home: Path, canaries: Canaries) -> None:
    codetape.configure(home=home, otlp=False, redact=False)
    run_id = record_leaky_agent(canaries)
    found = leaks(home, canaries.fragments())
    # The scan itself works: with redaction off every canary is found, in the files
    # and in the decoded database.
    assert set(found) == set(canaries.fragments())
    assert "codetape.duckdb (decoded)" in found["env CANARY_API_KEY"]
    step = codetape.Store(home).step(run_id, 0)
    assert canaries.api_key in step.code
    assert step.variables_before["db_password"].restorable is True


def windows(secret: str, width: int = 12) -> dict[str, str]:
    return {
        f"{secret[:4]}…[{i}:{i + width}]": secret[i : i + width]
        for i in range(len(secret) - width + 1)
    }


@dataclass
class Connection:
    notes: str
    password: str
    tail: str


@pytest.mark.parametrize(
    "where", ["str_variable", "bytes_variable", "object_variable", "result", "final_answer"]
)
def test_long_values_do_not_leak_part_of_a_secret(
    home: Path, canaries: Canaries, where: str
) -> None:
    # Long values are previewed shortened ("abc...xyz", reprlib cuts out the middle).
    # Shortening must not cut a secret in two and leave one half unredacted.
    codetape.configure(home=home, otlp=False)
    secret = canaries.db_password
    long_text = "a" * 80 + secret + "z" * 400
    if where == "str_variable":
        with codetape.run("bot"):
            execute("n = len(notes)", {"notes": long_text})
    elif where == "bytes_variable":
        with codetape.run("bot"):
            execute("n = len(notes)", {"notes": long_text.encode()})
    elif where == "object_variable":
        with codetape.run("bot"):
            execute("n = 1", {"conn": Connection("n" * 55, secret, "t" * 400)})
    elif where == "result":
        with codetape.run("bot"):
            execute("result = [notes]", {"notes": long_text})
    else:

        @codetape.agent
        def solve(task: str) -> dict[str, str]:
            return {"notes": long_text}

        solve("summarise")
    assert leaks(home, windows(secret)) == {}
