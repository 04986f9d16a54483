"""Starting ``codetape serve``: the checks that refuse a server that would be open to
anyone or could not start (a clear ``ConfigError`` each), then uvicorn."""

from __future__ import annotations

import ipaddress
import os
import ssl
from pathlib import Path

from ..errors import ConfigError
from ._app import Limits, ServerSettings, create_app

__all__ = ["TOKEN_ENV", "is_loopback", "read_token", "serve", "tls_files"]

TOKEN_ENV = "CODETAPE_TOKEN"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: Path | None, insecure_no_auth: bool, host: str) -> str | None:
    """The bearer token every request must carry; None for ``--insecure-no-auth``."""
    if insecure_no_auth:
        if not is_loopback(host):
            raise ConfigError(
                f"--insecure-no-auth is only accepted on a loopback address, not {host}",
                hint="bind to 127.0.0.1, or set CODETAPE_TOKEN (or --token-file) instead",
            )
        return None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {token_file}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"the token file {token_file} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(
            "codetape serve needs a bearer token for its clients",
            hint=f"set {TOKEN_ENV} or give --token-file F "
            "(or --insecure-no-auth, on 127.0.0.1 only)",
        )
    return token


def tls_files(certfile: Path | None, keyfile: Path | None) -> None:
    """Check that the certificate and key load, before the server starts."""
    if certfile is None and keyfile is None:
        return
    if certfile is None or keyfile is None:
        raise ConfigError("TLS needs both --certfile and --keyfile")
    for name, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if not path.is_file():
            raise ConfigError(f"{name} {path} is not a file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load the TLS certificate {certfile} with the key {keyfile}: {exc}",
            hint="give a PEM certificate and its PEM private key",
        ) from None


def serve(
    home: Path,
    host: str = "127.0.0.1",
    port: int = 4318,
    *,
    token_file: Path | None = None,
    insecure_no_auth: bool = False,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    limits: Limits | None = None,
) -> None:
    """Run the server until it is stopped (SIGINT or SIGTERM)."""
    token = read_token(token_file, insecure_no_auth, host)
    tls_files(certfile, keyfile)
    try:
        import uvicorn
    except ImportError:
        raise ConfigError(
            "codetape serve needs uvicorn and starlette",
            hint="pip install 'codetape[server]'",
        ) from None
    app = create_app(ServerSettings(home=home, token=token, limits=limits or Limits()))
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        log_level="warning",
        access_log=False,
    )
