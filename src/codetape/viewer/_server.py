"""How ``codetape ui`` serves the viewer: only to the user, only from their machine.

``codetape ui`` runs this module (``python -m codetape.viewer._server``), which runs
``streamlit run`` on ``_asgi.py``: the viewer's pages (``app.py``) as a Streamlit
``st.App``, with :class:`LocalOnly` in front of every request, Streamlit's own
middleware and routes behind it. Before it hands over, it forces the protections a
user's ``.streamlit/config.toml`` (or ``STREAMLIT_*`` variables) could turn off, and
says on stderr which setting it overrides.

:class:`LocalOnly` answers 403 with a short text to

- any request whose ``Host`` names neither a loopback address (``localhost``,
  ``127.0.0.1``, ``[::1]``, any port: an SSH tunnel moves the port) nor the address
  ``codetape ui --host`` was given (for a wildcard, the machine's own names, and the
  address a client actually connected to): a web page that rebinds its own name to
  127.0.0.1 sends its own name, and is refused;
- any websocket whose ``Origin`` is not the page it serves (same scheme-less
  ``host:port`` as the ``Host``), and any request that carries another origin's
  ``Origin``.

This module imports no Streamlit at import time: the CLI builds the command from it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ALLOW_LOCAL_EXEC_ENV",
    "ASGI",
    "PROTECTIONS",
    "TOKEN_ENV",
    "LocalOnly",
    "command",
    "main",
    "overridden",
]

# The ASGI app ``streamlit run`` serves: app.py behind LocalOnly.
ASGI = Path(__file__).with_name("_asgi.py")
# What ``codetape ui`` hands the server process: the per-launch token that unlocks the
# actions that run code, and whether local-backend replays may run from the page.
TOKEN_ENV = "CODETAPE_UI_TOKEN"
ALLOW_LOCAL_EXEC_ENV = "CODETAPE_UI_ALLOW_LOCAL_EXEC"

# Settings a user's config can change and codetape always sets: (option, the value
# codetape uses, its environment variable, what it protects).
PROTECTIONS: tuple[tuple[str, bool, str, str], ...] = (
    ("server.enableCORS", True, "STREAMLIT_SERVER_ENABLE_CORS", "CORS protection"),
    (
        "server.enableXsrfProtection",
        True,
        "STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION",
        "XSRF protection",
    ),
    # Development mode lets every origin in, whatever enableCORS says.
    ("global.developmentMode", False, "STREAMLIT_GLOBAL_DEVELOPMENT_MODE", "CORS protection"),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_WRONG_HOST = (
    "codetape viewer: refused. It answers only at a loopback address (localhost, "
    "127.0.0.1, [::1]) or at the address `codetape ui --host` was given, and this "
    "request was sent to another name.\n"
)
_WRONG_ORIGIN = (
    "codetape viewer: refused. It accepts connections only from its own pages, and "
    "this one came from another origin.\n"
)


def command(host: str, port: int) -> list[str]:
    """The command ``codetape ui`` runs: this module, with Streamlit's options."""
    return [
        sys.executable, "-m", "codetape.viewer._server",
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",  # no "Deploy" button: this is a local tool
    ]  # fmt: skip


def _flags() -> list[str]:
    """The protections as Streamlit options: on the command line, they win over every
    config file and environment variable."""
    flags: list[str] = []
    for option, value, _, _ in PROTECTIONS:
        flags += [f"--{option}", "true" if value else "false"]
    return flags


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(text)


def overridden(files: list[str], environ: Mapping[str, str]) -> list[str]:
    """One line per protection the user's config files or environment turn off, which
    the viewer keeps on (the files in Streamlit's order: later ones win)."""
    import tomllib

    found: dict[str, tuple[Any, str]] = {}
    for name in files:
        path = Path(name)
        if not path.is_file():
            continue
        try:
            parsed = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # Streamlit says so itself
        for option, _, _, _ in PROTECTIONS:
            section, _, key = option.partition(".")
            if isinstance(parsed.get(section), dict) and key in parsed[section]:
                found[option] = (parsed[section][key], f"in {path}")
    for option, _, variable, _ in PROTECTIONS:
        if variable in environ:
            found[option] = (environ[variable], f"by ${variable}")
    lines = []
    for option, value, _, what in PROTECTIONS:
        if option in found and _as_bool(found[option][0]) is not value:
            setting, where = found[option]
            setting = str(setting).lower() if isinstance(setting, bool) else repr(setting)
            lines.append(
                f"codetape ui: ignoring {option} = {setting} ({where}): the viewer keeps {what} on"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    """``streamlit run _asgi.py`` with ``argv`` and the protections forced."""
    import streamlit

    if not hasattr(streamlit, "App"):
        sys.exit(
            "codetape ui: this Streamlit has no st.App, which the viewer's server needs: "
            "pip install -U 'codetape[viewer]'"
        )
    from streamlit import config
    from streamlit.web import cli

    for line in overridden(config.get_config_files("config.toml"), os.environ):
        print(line, file=sys.stderr)
    args = sys.argv[1:] if argv is None else argv
    cli.main(args=["run", str(ASGI), *args, *_flags()], prog_name="streamlit")


# -- the guard -------------------------------------------------------------------


def _host_name(host: str) -> str:
    """``Host`` without its port, lower case, IPv6 brackets kept off."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def allowed_names(address: str) -> frozenset[str]:
    """The names besides loopback addresses a viewer bound to ``address`` answers to:
    ``localhost``, the address itself, and for a wildcard the machine's own names."""
    given = _host_name(address) if address.startswith("[") else address.strip().lower()
    names = {"localhost"}
    if given in _WILDCARDS:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    else:
        names.add(given)
    return frozenset(names)


class LocalOnly:
    """ASGI middleware: refuse requests addressed to a name the viewer does not serve,
    and connections from another origin (see the module's docstring)."""

    def __init__(self, app: ASGIApp, address: str | None = None) -> None:
        self.app = app
        if address is None:
            from streamlit import config

            address = str(config.get_option("server.address") or "")
        self.names = allowed_names(address)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            why = self.refusal(scope)
            if why is not None:
                await _refuse(scope, receive, send, why)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> str | None:
        """Why the request is refused, or None."""
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        host = headers.get("host", "")
        if not self._serves(_host_name(host), scope.get("server")):
            return _WRONG_HOST
        origin = headers.get("origin")
        if origin is None:
            return _WRONG_ORIGIN if scope["type"] == "websocket" else None
        parts = urlsplit(origin)
        same = parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()
        return None if same else _WRONG_ORIGIN

    def _serves(self, name: str, server: Any) -> bool:
        if name in self.names:
            return True
        address = _ip(name)
        if address is None:
            return False
        # An address is never a rebound name: a loopback one, or the one the client
        # connected to (a viewer bound to every interface, reached by its address).
        local = _ip(str(server[0])) if isinstance(server, tuple | list) and server else None
        return address.is_loopback or address == local


async def _refuse(scope: Scope, receive: Receive, send: Send, why: str) -> None:
    body = why.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


if __name__ == "__main__":
    main()
