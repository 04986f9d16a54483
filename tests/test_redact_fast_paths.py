"""The redactor's shortcuts find exactly what its full scans find.

``contains_secret`` tries only the patterns whose literal occurs in the bytes and the
name patterns only where a secret word occurs; ``text`` of a number's repr checks only
the environment's values. Each is compared here with the full scan it replaces.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from codetape.tracer import _redact as R

ENV = {
    "MY_API_TOKEN": "abcdefgh12345678",
    "DB_PASSWORD": "hunter2hunter2",
    "ACCOUNT_TOKEN": "123456789012",
}
PIECES = [
    b"password",
    b"token",
    b"Bearer ",
    b"BeArEr ",
    b"Authorization: ",
    b"://",
    b"sk-",
    b"sk-ant-",
    b"AKIA",
    b"eyJ",
    b"ghp_",
    b"api_key",
    b"apiKey",
    b"Cookie: ",
    b"secret=",
    b"-----BEGIN RSA PRIVATE KEY-----",
    b"hunter2hunter2",
    b"\x8c\x08password\x94\x8c\x08abcdefgh",
    b"=",
    b":",
    b"@",
    b"'",
]
_FULL_LINE = re.compile(R._line_re(R._ALL).pattern.replace(R._LEFT, R._PICKLE_LEFT).encode())


def full_scan(redactor: R.Redactor, data: bytes) -> bool:
    """``contains_secret`` without its shortcuts."""
    if len(data) < R._SHORTEST_SECRET:
        return False
    if (
        any(v in data for v in redactor._env_bytes)
        or R._PEM_BYTES.search(data) is not None
        or _FULL_LINE.search(data) is not None
    ):
        return True
    text, found = data.decode("latin-1"), list[str]()
    R._redact_named(text, found, pickled=True)
    return bool(found) or R._pickled_field(text)


noise = st.binary(min_size=1, max_size=40) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:=/@-_ .'\"",
    max_size=40,
).map(str.encode)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | noise, min_size=1, max_size=9))
def test_contains_secret_finds_what_the_full_scan_finds(parts: list[bytes]) -> None:
    redactor = R.Redactor(environ=ENV)
    data = b"".join(parts)
    assert redactor.contains_secret(data) == full_scan(redactor, data)


@settings(max_examples=500, deadline=None)
@given(st.integers() | st.floats(allow_nan=True) | st.complex_numbers())
def test_a_number_is_redacted_as_any_text_is(number: object) -> None:
    redactor = R.Redactor(environ=ENV)
    text = repr(number)
    assert redactor.text(text) == redactor._redact(text, None)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzTK:=/@_-'\" 0123456789", max_size=6))
def test_text_shorter_than_any_match_is_kept(text: str) -> None:
    redactor = R.Redactor(environ=ENV)
    assert redactor.text(text) == redactor._redact(text, None) == text


def test_a_number_holding_an_environment_secret_is_still_redacted() -> None:
    redactor = R.Redactor(environ=ENV)
    assert redactor.text("123456789012") == "[REDACTED:env:ACCOUNT_TOKEN]"
    assert redactor.contains_env_value(b"J123456789012.")
