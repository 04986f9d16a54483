"""Tests for codetape.tracer._redact.

Every credential below is assembled at runtime from harmless pieces, so the repository
never contains a string that secret scanners (e.g. GitHub push protection) would flag.
"""

from __future__ import annotations

import base64
import json
import pickle
import string
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codetape.tracer._redact import REDACTED, Redactor


def _b64url(obj: object) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


PEM_HEAD = "-----BEGIN " + "RSA PRIVATE" + " KEY-----"
PEM_TAIL = "-----END " + "RSA PRIVATE" + " KEY-----"
PEM_BODY = "\n".join(["TUlJQ2Nhbm" + "FyeUNhbmFyeQ" * 5] * 4)

OPENAI = "sk-" + "proj-" + "C4n4ryT3st" * 5
OPENAI_LEGACY = "sk-" + "c4N4rY" * 8
ANTHROPIC = "sk-" + "ant-api03-" + "c4n4ry_T3st-" * 6
AWS_AKIA = "AK" + "IA" + "TESTCANARY" + "234567"
AWS_ASIA = "AS" + "IA" + "CANARYTEST" + "765432"
GH_PAT_CLASSIC = "gh" + "p_" + "C4n4ry" * 6
GH_OAUTH = "gh" + "o_" + "T3stT0k3n" * 4
GH_FINE = "github" + "_pat_" + "11CANARY0" + "_c4n4ryT3st" * 6
JWT = ".".join(
    [
        _b64url({"alg": "HS256", "typ": "JWT"}),
        _b64url({"sub": "canary", "iat": 1700000000}),
        base64.urlsafe_b64encode(b"not-a-real-signature-32-bytes!!!").decode().rstrip("="),
    ]
)
PEM = f"{PEM_HEAD}\n{PEM_BODY}\n{PEM_TAIL}"
URL_PASSWORD = "s3cr3t-" + "P4ss"
BEARER = "tok." + "c4n4ry" * 5

# (kind, secret, text before it, text after it)
PATTERN_CASES = [
    ("openai_key", OPENAI, "OPENAI_KEY='", "'\nprint('ok')"),
    ("openai_key", OPENAI_LEGACY, 'client = OpenAI(api_key="', '")'),
    ("anthropic_key", ANTHROPIC, "x-api-key: ", "\r\n"),
    ("aws_access_key", AWS_AKIA, "aws_access_key_id = ", "\n[default]"),
    ("aws_access_key", AWS_ASIA, '{"AccessKeyId": "', '"}'),
    ("github_token", GH_PAT_CLASSIC, "token ", " (classic)"),
    ("github_token", GH_OAUTH, "GH=", ";"),
    ("github_token", GH_FINE, "using ", " for push"),
    ("jwt", JWT, "cookie: session=", "; Path=/"),
    ("private_key", PEM, "key file:\n", "\ndone"),
    ("private_key", PEM.replace("\n", "\\n"), '{"private_key": "', '\\n"}'),
    ("url_password", URL_PASSWORD, "DATABASE_URL=postgres://admin:", "@db.internal:5432/app"),
    ("url_password", "p@ss:" + URL_PASSWORD, "redis://default:", "@cache:6379/0"),
    ("bearer_token", BEARER, "curl -H 'Authorization: Bearer ", "' https://api.example.com"),
    ("bearer_token", BEARER + "==", '{"authorization": "bearer ', '"}'),
]
ALL_SECRETS = [case[1] for case in PATTERN_CASES]


@pytest.fixture
def r() -> Redactor:
    return Redactor({})


@pytest.mark.parametrize(
    ("kind", "secret", "before", "after"),
    PATTERN_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(PATTERN_CASES)],
)
def test_pattern_kinds(r: Redactor, kind: str, secret: str, before: str, after: str) -> None:
    out = r.text(before + secret + after)
    assert secret not in out
    assert out == f"{before}[REDACTED:{kind}]{after}"
    assert r.secrets_found(before + secret + after) == [kind]


def test_truncated_private_key_is_still_redacted(r: Redactor) -> None:
    preview = PEM[: len(PEM) // 2]  # previews are cut at a byte budget
    out = r.text("cat id_rsa\n" + preview)
    assert out == "cat id_rsa\n[REDACTED:private_key]"


def test_url_password_keeps_scheme_user_and_host(r: Redactor) -> None:
    url = f"git clone https://deploy-bot:{URL_PASSWORD}@git.example.org/team/repo.git"
    assert r.text(url) == (
        "git clone https://deploy-bot:[REDACTED:url_password]@git.example.org/team/repo.git"
    )


def test_token_used_as_url_user_is_redacted_too(r: Redactor) -> None:
    out = r.text(f"https://{GH_PAT_CLASSIC}:x-oauth-basic@github.com/o/r")
    assert GH_PAT_CLASSIC not in out
    assert out == "https://[REDACTED:github_token]:[REDACTED:url_password]@github.com/o/r"


@pytest.mark.parametrize(
    "text",
    [
        "task-management-system-for-large-teams-v2",
        "risk-assessment-framework-document-final",
        "https://example.com:8443/path?q=a:b",
        "git@github.com:codetape/codetape.git",
        "ssh://git@github.com/codetape/codetape",
        "the bearer of bad news is authorized",
        "Authorization: Bearer $OPENAI_API_KEY",
        'if line.startswith("' + PEM_HEAD + '"):  # until "' + PEM_TAIL + '"',
        "x" + AWS_AKIA,
        "eyJ.short.x",
        "[REDACTED] and [REDACTED:jwt] stay as they are",
    ],
)
def test_ordinary_text_is_untouched(r: Redactor, text: str) -> None:
    assert r.text(text) == text
    assert r.secrets_found(text) == []


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY",
        "GITHUB_TOKEN",
        "DB_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "MY_CREDENTIALS",
        "MYSQL_PASSWD",
        "SSH_PRIVATE",
        "NPM_AUTH",
        "apiKey",
        "clientSecret",
        "DBPASSWORD",
        "slack_bot_token",
    ],
)
def test_env_secret_names_are_redacted(name: str) -> None:
    secret = "c4n4ry/" + "Qz9" * 11
    red = Redactor({name: secret, "HOME": "/home/agent"})
    out = red.text(f"echo {secret} | tee log")
    assert out == f"echo [REDACTED:env:{name}] | tee log"
    assert red.secrets_found(secret) == [f"env:{name}"]


@pytest.mark.parametrize(
    "name",
    ["KEYBOARD_LAYOUT", "MONKEY", "PATH", "HOME", "PWD", "GIT_AUTHOR_NAME", "TOKENIZERS_MODEL"],
)
def test_env_ordinary_names_are_not_redacted(name: str) -> None:
    value = "notsecret-c4n4ry-value"
    red = Redactor({name: value})
    assert red.text(f"value={value}") == f"value={value}"


@pytest.mark.parametrize(
    "value",
    ["short7!", "TRUE", "false", "disabled", "12345678901", "REDACTED", "env:API_TOKEN"],
)
def test_env_values_that_are_not_secrets_are_ignored(value: str) -> None:
    red = Redactor({"API_TOKEN": value})
    assert red.text(f"got {value} ok") == f"got {value} ok"


def test_env_existing_path_ignored_but_long_number_redacted(tmp_path: Path) -> None:
    red = Redactor(
        {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path), "PIN_PASSWORD": "123456789012"}
    )
    assert red.text(f"reading {tmp_path}") == f"reading {tmp_path}"
    assert red.text("pin 123456789012") == "pin [REDACTED:env:PIN_PASSWORD]"


def test_env_longest_value_replaced_first() -> None:
    red = Redactor({"A_TOKEN": "c4n4ry12", "B_TOKEN": "c4n4ry12-and-more"})
    assert red.text("x c4n4ry12-and-more y c4n4ry12") == (
        "x [REDACTED:env:B_TOKEN] y [REDACTED:env:A_TOKEN]"
    )


def test_env_secret_escaped_in_repr_or_json_is_redacted() -> None:
    secret = "c4n4ry\"quote\\back'single-ünï"
    red = Redactor({"DB_PASSWORD": secret})
    for shown in (repr(secret), json.dumps(secret), repr({"pw": secret}), secret):
        out = red.text(f"value: {shown}")
        assert "c4n4ry" not in out, shown
        assert "[REDACTED:env:DB_PASSWORD]" in out


def test_env_default_reads_os_environ_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODETAPE_TEST_TOKEN", "c4n4ry-from-os-environ")
    red = Redactor()
    monkeypatch.setenv("CODETAPE_LATE_TOKEN", "c4n4ry-set-too-late")
    assert red.text("c4n4ry-from-os-environ") == "[REDACTED:env:CODETAPE_TEST_TOKEN]"
    assert red.text("c4n4ry-set-too-late") == "c4n4ry-set-too-late"


def test_value_redacts_nested_json_like_data() -> None:
    red = Redactor({"DB_PASSWORD": "hunter2-c4n4ry"})
    data = {
        "argv": ("psql", "postgres://u:hunter2-c4n4ry@db/x"),
        "hunter2-c4n4ry": [1, 2.5, None, True, {"tok": GH_OAUTH}],
        7: b"raw-bytes-are-left-alone",
    }
    out = red.value(data)
    assert out == {
        "argv": ["psql", "postgres://u:[REDACTED:env:DB_PASSWORD]@db/x"],
        "[REDACTED:env:DB_PASSWORD]": [1, 2.5, None, True, {"tok": "[REDACTED:github_token]"}],
        7: b"raw-bytes-are-left-alone",
    }
    assert data["argv"] == ("psql", "postgres://u:hunter2-c4n4ry@db/x")  # input untouched
    assert red.value(42) == 42


def test_contains_secret_on_pickled_payloads() -> None:
    env_secret = "pässwörd-c4n4ry-ünïcode"
    red = Redactor({"SERVICE_PASSWORD": env_secret})
    assert red.contains_secret(pickle.dumps({"cfg": {"pw": env_secret}}))
    assert red.contains_secret(pickle.dumps({"client": [GH_FINE]}))
    assert red.contains_secret(pickle.dumps(PEM))
    assert red.contains_secret(env_secret.encode())
    assert not red.contains_secret(pickle.dumps({"cfg": {"pw": "nothing to see"}}))
    cleaned = red.value({"cfg": {"pw": env_secret, "jwt": JWT}})
    assert not red.contains_secret(pickle.dumps(cleaned))


@pytest.mark.parametrize("length", range(24, 140, 3))
def test_contains_secret_whatever_the_pickled_length_byte(length: int) -> None:
    # pickle prefixes short strings with a length byte that is often a letter or digit
    token = (OPENAI_LEGACY * 3)[:length]
    red = Redactor({})
    assert red.contains_secret(pickle.dumps({"k": token}))
    assert red.contains_secret(pickle.dumps({"k": token.encode()}))
    assert not red.contains_secret(pickle.dumps({"k": ("task-" + "specific-" * 20)[:length]}))


def test_disabled_redactor_is_a_noop() -> None:
    env = {"OPENAI_API_KEY": OPENAI}
    off, on = Redactor(env, enabled=False), Redactor(env)
    text = f"key {OPENAI} and {JWT}"
    data = {"a": [text]}
    assert (off.enabled, on.enabled) == (False, True)
    assert off.text(text) == text
    assert off.value(data) is data
    assert not off.contains_secret(text.encode())
    assert off.secrets_found(text) == []
    assert on.text(text) != text  # same inputs, enabled: proves the no-op is the flag
    assert on.contains_secret(text.encode())


def test_marker_constant_and_kind_markers_share_prefix(r: Redactor) -> None:
    assert REDACTED == "[REDACTED]"
    assert r.text(JWT).startswith(REDACTED[:-1] + ":")


def test_large_output_is_redacted_quickly(r: Redactor) -> None:
    line = "Downloading https://files.example.org/pkg-1.0.tar.gz (Bearer of 12 kB) ok\n"
    blob = line * 50_000 + f"leaked {GH_PAT_CLASSIC} at the end\n"
    start = time.perf_counter()
    out = r.text(blob)
    elapsed = time.perf_counter() - start
    assert out.endswith("leaked [REDACTED:github_token] at the end\n")
    assert len(out) < len(blob)
    assert elapsed < 5.0


# --- properties -------------------------------------------------------------------------

_SECRET_NAMES = ["OPENAI_API_KEY", "GITHUB_TOKEN", "DB_PASSWORD", "MY_CREDENTIALS"]
_canary = st.text(
    alphabet=string.ascii_letters + string.digits + "!#$%^&*+=-_.~/", min_size=8, max_size=40
).map(lambda s: "cnry" + s)


@settings(deadline=None)
@given(
    name=st.sampled_from(_SECRET_NAMES),
    canary=_canary,
    before=st.text(),
    after=st.text(),
)
def test_property_env_canary_never_survives(
    name: str, canary: str, before: str, after: str
) -> None:
    red = Redactor({name: canary, "HOME": "/home/agent"})
    out = red.text(before + canary + after)
    assert canary not in out
    assert not red.contains_secret(out.encode("utf-8", "surrogatepass"))
    assert canary not in str(red.value({"k": [before + canary + after]}))


@settings(deadline=None)
@given(
    secret=st.sampled_from(ALL_SECRETS),
    before=st.text(),
    after=st.text(),
)
def test_property_pattern_secret_never_survives(secret: str, before: str, after: str) -> None:
    case = next(c for c in PATTERN_CASES if c[1] == secret)
    out = Redactor({}).text(f"{before} {case[2]}{secret}{case[3]} {after}")
    assert secret not in out


_fragments = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            *ALL_SECRETS,
            "cnry-env-secret",
            "://",
            "://user:",
            "@host",
            ":",
            "@",
            " ",
            "\n",
            "-",
            "_",
            "Authorization: Bearer ",
            PEM_HEAD,
            PEM_TAIL,
            "\n" + PEM_BODY[:40],
            "[REDACTED:jwt]",
            "[REDACTED]",
            "sk-",
            "AKIA",
            "eyJ",
        ]
    ),
)


@settings(deadline=None, max_examples=300)
@given(parts=st.lists(_fragments, max_size=12))
def test_property_redaction_is_idempotent(parts: list[str]) -> None:
    red = Redactor({"SERVICE_TOKEN": "cnry-env-secret"})
    raw = "".join(parts)
    once = red.text(raw)
    assert red.text(once) == once
    assert "cnry-env-secret" not in once
    # the bytes check must agree: whatever text() had to rewrite counts as a secret
    if once != raw:
        assert red.contains_secret(raw.encode("utf-8", "surrogatepass"))
