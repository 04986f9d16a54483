"""Secret redaction applied before anything leaves the traced process.

Agents routinely print, echo or pass around credentials (``env``, ``cat .env``, a
``curl -H "Authorization: ..."``). A trace store is meant to be shared, diffed and
exported over OTLP, so a secret written once is leaked for good. Every string bound for
the spool, blobs, DuckDB or OTLP therefore goes through :class:`Redactor` first.

Two complementary sources of truth:

* **Host environment.** Values of variables whose *name* looks secret are replaced by
  ``[REDACTED:env:NAME]`` wherever they appear. This is the only way to catch shapeless
  secrets such as ``AWS_SECRET_ACCESS_KEY`` or database passwords.
  Their base64 (standard and URL-safe, also inside a longer base64 text such as a Basic
  ``Authorization``) and hex encodings are replaced too.
* **Well-known shapes.** Provider keys, tokens, JWTs, PEM private keys, passwords in URLs
  and bearer headers are replaced by ``[REDACTED:<kind>]`` even when they never were in
  the environment (e.g. read from a file by the agent).
* **Names.** A value whose key or argument *name* says it is secret (authorization,
  cookie, set-cookie, api_key, apikey, token, secret, password, passwd, private_key,
  client_secret, and names ending in them such as ``db_password`` or ``x-api-key``) is
  replaced by ``[REDACTED:<kind>]``: in dicts and keyword arguments, in ``Authorization``
  and ``Cookie``/``Set-Cookie`` header lines (the scheme and cookie names stay), and in
  ``key=value``, ``key: value``, ``"key": "value"`` text. Text must look like data, not
  code: ``password = input()`` or ``f(token=token)`` are left as they are, and so is a
  count (``tokens_used``), a number or a boolean under a secret name.

An environment value is ignored (not considered secret) when it is shorter than 8
characters, is a boolean-ish word, is all digits and shorter than 12 (ports, ids), is an
absolute path that exists (``SSH_AUTH_SOCK``, ``GOOGLE_APPLICATION_CREDENTIALS`` point
*at* secrets and redacting every mention of them would mangle ordinary output), or
occurs inside a marker (it could never be hidden and would break idempotency).

Redaction is best effort: it removes what it can recognise, it cannot prove a trace is
clean. Stdlib only and free of codetape imports, so any layer can use it without cycles.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
from collections.abc import Iterator, Mapping

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
# Text with nothing but a number's characters holds no secret of a known shape or name,
# and nothing shorter than an env value is a secret.
_NUMBER = re.compile(r"[-+0-9.eEj() ]{0,64}")
_SHORTEST_SECRET = 8
# The shortest text any pattern replaces ("token=x", "://u:p@"): shorter text is kept.
_SHORTEST_MATCH = 7


@functools.cache
def _line_bytes_re(branches: tuple[int, ...]) -> re.Pattern[bytes]:
    """The single-line patterns for raw bytes (a pickle's length byte is no left
    neighbour), only ``branches``: as ``_line_re`` is to ``text()``."""
    pattern = _line_re(branches).pattern.replace(_LEFT, _PICKLE_LEFT)
    return re.compile(pattern.encode())


# Each branch's hints as bytes; the bearer branch matches its word in any case, so its
# hint is looked for in the lowercased bytes.
_HINT_BYTES = tuple(tuple(h.encode() for h in hints) for hints, _ in _BRANCHES)
_ANY_CASE_BRANCH = next(i for i, (hints, _) in enumerate(_BRANCHES) if "earer" in hints)


def _present(s: str) -> tuple[int, ...]:
    """The branches whose hint occurs in ``s``."""
    return tuple(i for i, (hints, _) in enumerate(_BRANCHES) if any(h in s for h in hints))


# Any branch's hint, for texts that hold none (most): one search instead of one each.
_ANY_HINT_TEXT = re.compile("|".join(re.escape(h) for hints, _ in _BRANCHES for h in hints))
_ANY_HINT = re.compile(
    b"|".join(
        re.escape(h) for i, hints in enumerate(_HINT_BYTES) if i != _ANY_CASE_BRANCH for h in hints
    )
)


def _line_bytes_match(data: bytes, low: bytes) -> bool:
    """Whether a single-line pattern matches ``data``, trying only the branches whose
    literal occurs (the bearer branch's in any case, as its pattern)."""
    if _ANY_HINT.search(data) is None and b"earer" not in low:
        return False
    present = []
    for i, hints in enumerate(_HINT_BYTES):
        where = low if i == _ANY_CASE_BRANCH else data
        for hint in hints:
            if hint in where:
                present.append(i)
                break
    return bool(present) and _line_bytes_re(tuple(present)).search(data) is not None


# -- secrets by name ---------------------------------------------------------------------

# A key or argument name, lower snake case, that says its value is secret; the group that
# matches is the marker's kind. A name may carry a prefix (db_password, x_api_key,
# clientsecret); tokens_used, max_tokens, token_count or password_hint are not secret.
_FIELD_NAME = re.compile(
    r"(?:[a-z0-9]+_)*?(?:"
    r"(?P<password>[a-z0-9]*pass(?:word|wd|phrase))"
    r"|(?P<api_key>[a-z0-9]*api_?key)"
    r"|(?P<private_key>private_?key)"
    r"|(?P<secret>[a-z0-9]*secret|(?:secret|access|signing|master|encryption|client)_?key)"
    r"|(?P<token>[a-z0-9]*token)"
    r"|(?P<authorization>authorization)"
    r"|(?P<cookie>[a-z0-9]*cookies?)"
    r"|(?P<credentials>credentials?))"
)
_FIELD_KINDS = tuple(_FIELD_NAME.groupindex)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")

# ``Authorization: <scheme> <credentials>`` and ``Cookie:``/``Set-Cookie:`` header lines:
# the value runs to the end of the line (or a quote closing a curl -H '...').
_HEADER = (
    r"(?P<hkey>(?:proxy-)?authorization|(?:set-)?cookie)[ \t]*:[ \t]*"
    r"(?P<hvalue>[^\s\"'][^\r\n\"']*)"
)
# ``key=value``, ``key: value``, ``"key": "value"`` (also JSON-escaped, or a subscript
# ``env["API_TOKEN"] = "..."``). The name is taken whole (a lookahead and backreference
# make it atomic, so a long name is read once), must end as one of _FIELD_NAME's words
# (a fast first cut), and is kept only when _FIELD_NAME says so. A quoted value must not
# start like code around a string (``"password=" + pw``, ``"token: %s" % t``); a bare
# value ends where data ends, so ``f(token=token)`` or ``{"password": pw}`` hold no
# value, and _named_sub drops more that is code.
_FIELD = (
    r"(?=(?P<name>[A-Za-z0-9_-]+))(?P=name)(?<=rd|wd|se|et|en|ey|on|ie|es|al|ls)"
    r"(?:\\?[\"']\]?)?"
    r"[ \t]*(?P<sep>[:=])(?![=:])[ \t]*"
    r"(?:(?P<quote>\\?[\"'])(?P<quoted>(?![\s+,);%])(?:\\.|[^\\\r\n])*?)(?=(?P=quote))"
    r"|(?=(?P<bare>[^\s\"'&;,<>(){}]+))(?P=bare)(?![,(){}]))"
)
_NAMED_LEFT = "(?<![A-Za-z0-9_-])"
_NAMED_PICKLE_LEFT = r"(?<![^\x8cC][A-Za-z0-9_-])"


def _named_re(left: str) -> re.Pattern[str]:
    return re.compile(f"{left}(?:{_HEADER})|{left}(?:{_FIELD})", re.ASCII | re.IGNORECASE)


_NAMED_RE, _NAMED_PICKLE_RE = _named_re(_NAMED_LEFT), _named_re(_NAMED_PICKLE_LEFT)
# Every secret name holds one of these words (a bare "key" is not one): the text,
# lowercased, is searched for them, and the patterns are tried only at the start of the
# names around them. (re.IGNORECASE on the text itself is three times slower; it is the
# fallback for the few texts whose length lower() changes.)
_WORDS = ("pass", "secret", "token", "auth", "cookie", "credential")
_KEY_WORDS = ("api", "private", "access", "signing", "master", "encryption", "client")
_NAME_WORD = "|".join([*_WORDS, *(f"{word}[_-]?key" for word in _KEY_WORDS)])
_NAME_WORDS, _ANY_CASE_NAME_WORDS = re.compile(_NAME_WORD), re.compile(_NAME_WORD, re.I | re.A)
_NAME_WORDS_BYTES = re.compile(_NAME_WORD.encode())
_BEFORE_NAME = re.compile(r".*[^A-Za-z0-9_-]", re.DOTALL)
_LINE_END = re.compile(r"[ \t]*(?:[\r\n]|$)")
# Not a secret but a stand-in for one: $TOKEN, ${TOKEN}, %s, {token}, <token>, *****
# (and the ``= ...`` of an annotated assignment).
_PLACEHOLDER = re.compile(
    r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?$|%[sdr(]|\{.*\}$|<[^<>]*>$|=|\*+$|\[(?!REDACTED)", re.DOTALL
)
# A bare value that is a type annotation (``token: str``), not a secret.
_ANNOTATION = re.compile(r"(?:str|bytes|int|float|bool|object|Any|None|Secret\w*)$|[\w.]+\[.*\]$")
_MARKERS_AND_ESCAPES = re.compile(rf"{_MARKER}|\\.|[\s\"']")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9_-]*[ \t]+)(\S.*)", re.DOTALL)
_COOKIE_PARTS = re.compile(r"(;[ \t]*)")
_COOKIE_ATTRIBUTES = frozenset(
    {"path", "domain", "expires", "max-age", "samesite", "secure", "httponly", "version"}
    | {"comment", "priority", "partitioned"}
)
# A pickled dict entry whose key is a secret name: the key as a short str, a memo, then a
# non-empty str or bytes, or a container that starts with one.
_PICKLED_FIELD = re.compile(
    r"\x8c(?P<n>[\x01-\xff])(?P<key>[A-Za-z0-9_-]+)\x94?"
    r"(?:\x8c(?P<vn>[\x01-\xff])|[XB\x8d\x8e](?!\x00{4})|C[\x01-\xff]|[}\]]\x94?\(?[\x8cXC])",
    re.DOTALL,
)


@functools.lru_cache(maxsize=1024)
def _field_kind(name: str) -> str | None:
    """The kind of secret a key or argument name holds (``"password"``...), or None."""
    if len(name) > 100:
        return None
    snake = _NOT_ALNUM.sub("_", _CAMEL.sub("_", name).lower()).strip("_")
    match = _FIELD_NAME.fullmatch(snake)
    return match.lastgroup if match else None


def _nothing_to_hide(value: str) -> bool:
    """Empty, already markers (and what a cut left of an escape), or a placeholder."""
    return not _MARKERS_AND_ESCAPES.sub("", value) or _PLACEHOLDER.match(value) is not None


def _hidden_cookies(value: str) -> str | None:
    """``sid=...; Path=/``: every cookie's value replaced, the names and attributes kept."""
    parts, changed = _COOKIE_PARTS.split(value), False
    for i, part in enumerate(parts):
        name, equals, cookie = part.partition("=")
        if part.startswith(";") or name.strip().lower() in _COOKIE_ATTRIBUTES:
            continue
        if not equals and i > 0:  # a flag of Set-Cookie's
            continue
        if _nothing_to_hide(cookie if equals else name):
            continue
        parts[i] = f"{name}=[REDACTED:cookie]" if equals else "[REDACTED:cookie]"
        changed = True
    return "".join(parts) if changed else None


def _hidden(kind: str, value: str) -> str | None:
    """``value`` of a secret-named field with the secret replaced by a marker; None when
    there is nothing to hide. An Authorization keeps its scheme (``Basic [REDACTED:...]``)."""
    if kind == "cookie" and "=" in value:
        return _hidden_cookies(value)
    head = ""
    if kind == "authorization" and (scheme := _SCHEME.fullmatch(value)):
        head, value = scheme.groups()
    if _nothing_to_hide(value):
        return None
    return f"{head}[REDACTED:{kind}]"


def _bare_value(m: re.Match[str]) -> bool:
    """Whether an unquoted value is data: ``key=value`` without spaces (``token = tok``
    is code), ``key: value`` as the whole rest of the line and not a type annotation."""
    if m["sep"] == "=":
        return not any(c in " \t" for c in m.string[m.end("name") : m.start("bare")])
    return _LINE_END.match(m.string, m.end()) is not None and not _ANNOTATION.match(m["bare"])


def _named_sub(m: re.Match[str], found: list[str] | None) -> str:
    if m["hkey"] is not None:
        kind, value, start = _field_kind(m["hkey"]), m["hvalue"], m.start("hvalue")
    else:
        kind, value = _field_kind(m["name"]), m["quoted"]
        start = m.start("quoted")
        if value is None:
            value, start = m["bare"], m.start("bare")
            if not _bare_value(m):
                return m.group()
    hidden = _hidden(kind, value) if kind is not None else None
    if kind is None or hidden is None:
        return m.group()
    if found is not None:
        found.append(kind)
    return m.string[m.start() : start] + hidden


def _named_matches(s: str, pickled: bool) -> Iterator[re.Match[str]]:
    """What ``_NAMED_RE.finditer`` (or the pickle one) finds, much faster on long text."""
    pattern, done, tried = (_NAMED_PICKLE_RE if pickled else _NAMED_RE), 0, -1
    low = s.lower()
    words = _NAME_WORDS.finditer(low) if len(low) == len(s) else _ANY_CASE_NAME_WORDS.finditer(s)
    for word in words:
        if word.start() < done:
            continue
        lowest = max(done, word.start() - 100)
        before = _BEFORE_NAME.match(s, lowest, word.start())
        start = before.end() if before else lowest
        if start == tried:
            continue
        tried = start
        # in a pickle a name may follow its length byte, itself a letter or digit
        starts = (
            (start, start + 1) if pickled and s[start - 1 : start] in ("\x8c", "C") else (start,)
        )
        for at in starts:
            if (m := pattern.match(s, at)) is not None:
                done = m.end()
                yield m
                break


def _redact_named(s: str, found: list[str] | None, pickled: bool = False) -> str:
    pieces, done = [], 0
    for m in _named_matches(s, pickled):
        pieces += [s[done : m.start()], _named_sub(m, found)]
        done = m.end()
    return "".join([*pieces, s[done:]]) if pieces else s


def _pickled_field(text: str) -> bool:
    """Whether latin-1 text of a pickle holds a dict entry whose key names a secret."""
    for m in _PICKLED_FIELD.finditer(text):
        if ord(m["n"]) != len(m["key"]) or _field_kind(m["key"]) is None:
            continue
        value = text[m.end() : m.end() + ord(m["vn"])] if m["vn"] else "?"
        if not _nothing_to_hide(value):
            return True
    return False


def _hidden_header(name: str, value: str) -> str:
    """The value of a header given as a (name, value) pair, its secret replaced."""
    kind = _field_kind(name)
    if kind not in ("authorization", "cookie") or kind is None:
        return value
    return _hidden(kind, value) or value


def _hide_all(kind: str, obj: object) -> object:
    """Every string inside a secret-named field's value (a dict of cookies, a list)."""
    if isinstance(obj, str):
        return _hidden(kind, obj) or obj
    if isinstance(obj, Mapping):
        return {k: _hide_all(kind, v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_hide_all(kind, v) for v in obj]
    return obj


# -- secrets in the environment --------------------------------------------------------


def _encodings(value: str) -> list[str]:
    """How a secret may appear encoded: hex, and base64 (standard and URL-safe) whole or
    as the part that is the same wherever the secret sits in a longer base64 text."""
    raw = value.encode("utf-8", "surrogatepass")
    forms = [raw.hex(), raw.hex().upper()]
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms += [whole, whole.rstrip("=")]
        for shift in (0, 1, 2):
            text = encode(bytes(shift) + raw).decode()
            # drop what the padding in front and the bytes after can change
            forms.append(text[(shift * 4 + 2) // 3 : (shift + len(raw)) // 3 * 4])
    return [form for form in forms if len(form) >= 8]


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
            [f"[REDACTED:{k}]" for k in (*_KINDS, *_FIELD_KINDS)]
            + [f"[REDACTED:env:{n}]" for n in names]
            + [REDACTED]
        )
        by_value: dict[str, str] = {}
        for name in names:  # sorted, so a value shared by several names gets a stable label
            if _plausible_secret(env[name], markers):
                # Also as it appears inside repr() and JSON strings (previews, tool args),
                # where quotes, backslashes and non-ASCII characters come out escaped,
                # and encoded as base64 or hex.
                value = env[name]
                for form in (value, repr(value)[1:-1], json.dumps(value)[1:-1]):
                    by_value.setdefault(form, name)
                for form in _encodings(value):
                    if form not in markers:
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
        if not self._enabled or len(s) < _SHORTEST_MATCH:
            return s
        if _NUMBER.fullmatch(s) is not None:  # a number's repr: only a value of the env
            return self._redact_env(s, None)
        return self._redact(s, None)

    def secrets_found(self, s: str) -> list[str]:
        """Marker labels (``"jwt"``, ``"env:GITHUB_TOKEN"``...) text() would emit, deduplicated."""
        found: list[str] = []
        if self._enabled:
            self._redact(s, found)
        return list(dict.fromkeys(found))

    def value(self, obj: object) -> object:
        """Redact every str inside dicts (keys too), lists and tuples (returned as lists);
        the strings under a secret name (``{"api_key": ...}``, an ``("Authorization",
        ...)`` header pair) are replaced."""
        if not self._enabled:
            return obj
        if isinstance(obj, str):
            return self._redact(obj, None)
        if isinstance(obj, Mapping):
            redacted: dict[object, object] = {}
            for key, item in obj.items():
                kind = _field_kind(key) if isinstance(key, str) else None
                item = self.value(item)
                redacted[self._redact(key, None) if isinstance(key, str) else key] = (
                    item if kind is None else _hide_all(kind, item)
                )
            return redacted
        if isinstance(obj, (list, tuple)):
            items = [self.value(v) for v in obj]
            if len(items) == 2 and isinstance(obj[0], str) and isinstance(items[1], str):
                items[1] = _hidden_header(obj[0], items[1])
            return items
        return obj

    def contains_env_value(self, data: bytes) -> bool:
        """Whether raw bytes hold the value of a secret environment variable."""
        return self._enabled and any(v in data for v in self._env_bytes)

    def contains_secret(self, data: bytes) -> bool:
        """Whether raw bytes (a pickle, a blob) hold a secret; such payloads must not be kept."""
        if not self._enabled or len(data) < _SHORTEST_SECRET:
            return False
        low = data.lower()  # ASCII letters only, as the patterns' re.ASCII
        if (
            any(v in data for v in self._env_bytes)
            or (b"PRIVATE KEY" in data and _PEM_BYTES.search(data) is not None)
            or _line_bytes_match(data, low)
        ):
            return True
        # What text() finds by name, and dict entries a pickle keeps under a secret name:
        # every secret name holds one of _NAME_WORDS.
        if _NAME_WORDS_BYTES.search(low) is None:
            return False
        text, found = data.decode("latin-1"), list[str]()
        _redact_named(text, found, pickled=True)
        return bool(found) or _pickled_field(text)

    def _redact_env(self, s: str, found: list[str] | None) -> str:
        for value, name in self._env:
            if value in s:
                s = s.replace(value, f"[REDACTED:env:{name}]")
                if found is not None:
                    found.append(f"env:{name}")
        return s

    def _redact(self, s: str, found: list[str] | None) -> str:
        s = self._redact_env(s, found)
        if "PRIVATE KEY" in s:
            s = _PEM_RE.sub(lambda m: self._mark("private_key", found), s)
        present = _present(s) if _ANY_HINT_TEXT.search(s) is not None else ()
        if present:
            s = _line_re(present).sub(lambda m: self._line_sub(m, found), s)
        return _redact_named(s, found)

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
