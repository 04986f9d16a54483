"""Secret redaction applied before anything leaves the traced process.

Agents routinely print, echo or pass around credentials (``env``, ``cat .env``, a
``curl -H "Authorization: ..."``). A trace store is meant to be shared, diffed and
exported over OTLP, so a secret written once is leaked for good. Every string bound for
the spool, blobs, DuckDB or OTLP therefore goes through :class:`Redactor` first.

Two complementary sources of truth:

* **Host environment.** Values of variables whose *name* looks secret are replaced by
  ``[REDACTED:env:NAME]`` wherever they appear. This is the only way to catch shapeless
  secrets such as ``AWS_SECRET_ACCESS_KEY`` or database passwords.
* **Well-known shapes.** Provider keys, tokens, JWTs, PEM private keys, passwords in URLs
  and bearer headers are replaced by ``[REDACTED:<kind>]`` even when they never were in
  the environment (e.g. read from a file by the agent).

An environment value is ignored (not considered secret) when it is shorter than 8
characters, is a boolean-ish word, is all digits and shorter than 12 (ports, ids), is an
absolute path that exists (``SSH_AUTH_SOCK``, ``GOOGLE_APPLICATION_CREDENTIALS`` point
*at* secrets and redacting every mention of them would mangle ordinary output), or
occurs inside a marker (it could never be hidden and would break idempotency).

Redaction is best effort: it removes what it can recognise, it cannot prove a trace is
clean. Stdlib only and free of codetape imports, so any layer can use it without cycles.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[REDACTED]"

# Name parts (split on separators and camelCase). KEY/AUTH/PRIVATE must be a whole part
# so KEYBOARD_LAYOUT, MONKEY or GIT_AUTHOR_NAME stay visible; the longer words may carry
# a prefix (DBPASSWORD, CLIENTSECRET, GHTOKEN) because they rarely occur by accident.
# PWD is deliberately absent: it is the shell's working directory.
_NAME_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_SECRET_PART = re.compile(
    r"(?:API|ACCESS|SECRET|PRIVATE|SIGNING|MASTER|ENCRYPTION)?KEYS?"
    r"|[A-Z0-9]*(?:TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL)S?"
    r"|PRIVATE|O?AUTH|PASS|CREDS?"
)
_NOT_SECRET_WORDS = frozenset({"true", "false", "yes", "no", "none", "null", "disabled"})

_MARKER = r"\[REDACTED[^\]\s]*\]"
# Multi-line and possibly cut short (previews are truncated), so a BEGIN line followed by
# enough key-like body counts even without END; the body alphabet excludes quotes and
# brackets so source code that merely mentions the header is left alone. It gets its own
# pass *before* the single-line patterns: once a key block is a marker a URL around it
# can match, and doing it in this order keeps text(text(x)) == text(x).
_PEM_BODY = r"[A-Za-z0-9+/=\s\\:,.-]"  # base64, headers, JSON-escaped "\n"
_PEM = (
    rf"-----BEGIN[A-Z ]*PRIVATE KEY[A-Z ]*-----"
    rf"(?:{_PEM_BODY}*?-----END[A-Z ]*PRIVATE KEY[A-Z ]*-----|{_PEM_BODY}{{16,}})"
)

_LEFT = "(?<![A-Za-z0-9]"
# Pickle stores a short str/bytes as opcode \x8c/C, one length byte, then the text: that
# length byte is often alphanumeric, so in raw bytes it must not count as a left neighbour.
_PICKLE_LEFT = r"(?<![^\x8cC][A-Za-z0-9]"


def _tok(prefix: str) -> str:
    # Literal first so ``re`` can use its fast prefix scan; the lookbehind then demands a
    # non-alphanumeric before the token (no match inside "task-..." or "xAKIA...").
    return rf"{prefix}{_LEFT}{prefix})"


# (substrings one of which must occur, regex). Each regex holds exactly one group: an
# empty tag named after the kind, so ``match.lastgroup`` is the kind and the tag splits
# the match: text before it is kept (a URL's scheme and user, the Authorization header),
# text after it is replaced; a tag at the very end replaces the whole match. Tags sit
# last because a group in front defeats the prefix scan. Token branches consume every
# trailing alphanumeric, so replacing one never creates a new boundary for a neighbour.
_BRANCHES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("sk-ant-",), rf"{_tok('sk-ant-')}[A-Za-z0-9_-]{{20,}}(?P<anthropic_key>)"),
    (("sk-",), rf"{_tok('sk-')}[A-Za-z0-9_-]{{20,}}(?P<openai_key>)"),
    (("AKIA", "ASIA"), rf"{_tok('A[KS]IA')}[A-Z0-9]{{16}}(?![A-Za-z0-9])(?P<aws_access_key>)"),
    (
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        rf"(?:{_tok('gh[pousr]_')}[A-Za-z0-9]{{30,}}|{_tok('github_pat_')}[A-Za-z0-9_]{{30,}})"
        r"(?P<github_token>)",
    ),
    (("eyJ",), rf"{_tok('eyJ')}[A-Za-z0-9_-]{{8,}}\.[A-Za-z0-9_-]{{8,}}\.[A-Za-z0-9_-]*(?P<jwt>)"),
    # The user may already be a marker (an env secret); a password that already is one
    # is left alone so the more specific env label survives.
    (
        ("://",),
        rf"://(?:{_MARKER}|[^\s:/@\[\]])+:(?P<url_password>)(?!{_MARKER}@)[^\s/]+(?=@)",
    ),
    (
        ("earer", "EARER"),
        r"[Aa](?i:uthorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer)\s+(?P<bearer_token>)"
        r"[A-Za-z0-9._~+/-]+=*",
    ),
)
_ALL = tuple(range(len(_BRANCHES)))
_KINDS = ("private_key", *(re.findall(r"\?P<(\w+)>", src)[0] for _, src in _BRANCHES))


@functools.cache
def _line_re(branches: tuple[int, ...]) -> re.Pattern[str]:
    # Only the branches whose hint occurs: a log full of "://" must not pay for the rest.
    return re.compile("|".join(_BRANCHES[i][1] for i in branches), re.ASCII)


# re.ASCII: \s and friends mean the same in str and bytes, so contains_secret() agrees
# with text() on what is a secret.
_PEM_RE, _PEM_BYTES = re.compile(_PEM, re.ASCII), re.compile(_PEM.encode())
_LINE_BYTES = re.compile(_line_re(_ALL).pattern.replace(_LEFT, _PICKLE_LEFT).encode())


def _secret_name(name: str) -> bool:
    return any(_SECRET_PART.fullmatch(p.upper()) for p in _NAME_PART.findall(name))


def _plausible_secret(value: str, markers: str) -> bool:
    if len(value) < 8 or (value.isdigit() and len(value) < 12) or value in markers:
        return False
    return value.lower() not in _NOT_SECRET_WORDS and not (
        os.path.isabs(value) and os.path.exists(value)
    )


class Redactor:
    """Replace secrets in text and JSON-like data by ``[REDACTED:<kind>]`` markers."""

    def __init__(self, environ: Mapping[str, str] | None = None, *, enabled: bool = True) -> None:
        env = dict(os.environ if environ is None else environ)
        names = sorted(n for n in env if _secret_name(n))
        markers = "\n".join(
            [f"[REDACTED:{k}]" for k in _KINDS]
            + [f"[REDACTED:env:{n}]" for n in names]
            + [REDACTED]
        )
        by_value: dict[str, str] = {}
        for name in names:  # sorted, so a value shared by several names gets a stable label
            if _plausible_secret(env[name], markers):
                # Also as it appears inside repr() and JSON strings (previews, tool args),
                # where quotes, backslashes and non-ASCII characters come out escaped.
                for form in (env[name], repr(env[name])[1:-1], json.dumps(env[name])[1:-1]):
                    by_value.setdefault(form, name)
        # Longest first: a secret containing another must vanish whole, not leave a tail.
        self._env = sorted(by_value.items(), key=lambda kv: (-len(kv[0]), kv[0]))
        # surrogatepass is what pickle uses for str, so undecodable env bytes still match.
        self._env_bytes = [v.encode("utf-8", "surrogatepass") for v, _ in self._env]
        self._enabled = enabled

    @property
    def enabled(self) -> bool:
        return self._enabled

    def text(self, s: str) -> str:
        return self._redact(s, None) if self._enabled else s

    def secrets_found(self, s: str) -> list[str]:
        """Marker labels (``"jwt"``, ``"env:GITHUB_TOKEN"``...) text() would emit, deduplicated."""
        found: list[str] = []
        if self._enabled:
            self._redact(s, found)
        return list(dict.fromkeys(found))

    def value(self, obj: object) -> object:
        """Redact every str inside dicts (keys too), lists and tuples (returned as lists)."""
        if not self._enabled:
            return obj
        if isinstance(obj, str):
            return self._redact(obj, None)
        if isinstance(obj, Mapping):
            return {
                (self._redact(k, None) if isinstance(k, str) else k): self.value(v)
                for k, v in obj.items()
            }
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        return obj

    def contains_secret(self, data: bytes) -> bool:
        """Whether raw bytes (a pickle, a blob) hold a secret; such payloads must not be kept."""
        if not self._enabled:
            return False
        return (
            any(v in data for v in self._env_bytes)
            or _PEM_BYTES.search(data) is not None
            or _LINE_BYTES.search(data) is not None
        )

    def _redact(self, s: str, found: list[str] | None) -> str:
        for value, name in self._env:
            if value in s:
                s = s.replace(value, f"[REDACTED:env:{name}]")
                if found is not None:
                    found.append(f"env:{name}")
        if "PRIVATE KEY" in s:
            s = _PEM_RE.sub(lambda m: self._mark("private_key", found), s)
        present = tuple(i for i, (hints, _) in enumerate(_BRANCHES) if any(h in s for h in hints))
        if present:
            s = _line_re(present).sub(lambda m: self._line_sub(m, found), s)
        return s

    def _line_sub(self, m: re.Match[str], found: list[str] | None) -> str:
        kind = m.lastgroup or "secret"
        split = m.start(kind)
        if split == m.end():
            return self._mark(kind, found)
        # The user part of a URL can itself be a token (https://ghp_...:x-oauth-basic@...).
        kept = _line_re(_ALL).sub(lambda p: self._line_sub(p, found), m.string[m.start() : split])
        return kept + self._mark(kind, found)

    @staticmethod
    def _mark(kind: str, found: list[str] | None) -> str:
        if found is not None:
            found.append(kind)
        return f"[REDACTED:{kind}]"
