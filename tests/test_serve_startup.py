"""``codetape serve`` refuses to start when it would be open to anyone or could not
serve (a clear message and exit code 2), and serves over TLS with a certificate: the
OpenTelemetry SDK's OTLP/HTTP exporter (gzip, the token header, the certificate to
trust) delivers spans to it over https."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from codetape import Store

from .test_serve import _CLI, TOKEN, free_port, start, stop


def refused(*args: str, token: str | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "CODETAPE_TOKEN"}
    if token is not None:
        env["CODETAPE_TOKEN"] = token
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "serve", "--port", str(free_port()), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stderr


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    code, stderr = refused("--home", str(tmp_path), "--host", "0.0.0.0", "--insecure-no-auth")
    assert code == 2
    assert "--insecure-no-auth is only accepted on a loopback address" in stderr


def test_a_missing_token_is_refused(tmp_path: Path) -> None:
    code, stderr = refused("--home", str(tmp_path))
    assert code == 2
    assert "needs a bearer token" in stderr
    assert "CODETAPE_TOKEN" in stderr
    empty = tmp_path / "token"
    empty.write_text("\n")
    code, stderr = refused("--home", str(tmp_path), "--token-file", str(empty))
    assert code == 2
    assert "is empty" in stderr
    code, stderr = refused("--home", str(tmp_path), "--token-file", str(tmp_path / "nope"))
    assert code == 2
    assert "cannot read the token file" in stderr


def test_a_bad_certificate_path_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    code, stderr = refused(
        "--home", str(tmp_path), "--certfile", str(missing), "--keyfile", str(missing), token="t"
    )
    assert code == 2
    assert f"--certfile {missing} is not a file" in stderr
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    code, stderr = refused(
        "--home", str(tmp_path), "--certfile", str(junk), "--keyfile", str(junk), token="t"
    )
    assert code == 2
    assert "cannot load the TLS certificate" in stderr
    code, stderr = refused("--home", str(tmp_path), "--certfile", str(junk), token="t")
    assert code == 2
    assert "both --certfile and --keyfile" in stderr


def test_a_token_file_is_read(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    server = start(
        tmp_path / "home",
        "--token-file",
        str(token_file),
        env={"CODETAPE_TOKEN": ""},
        token="from-a-file",
    )
    try:
        assert server.request("GET", "/healthz", token="from-a-file")[0] == 200
        assert server.request("GET", "/healthz", token=TOKEN)[0] == 401
    finally:
        stop(server)


def test_no_auth_on_loopback_serves_without_a_token(tmp_path: Path) -> None:
    server = start(tmp_path / "home", "--insecure-no-auth", env={"CODETAPE_TOKEN": ""}, token=None)
    try:
        assert server.request("GET", "/healthz", token=None)[0] == 200
    finally:
        stop(server)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for a certificate")
def test_the_sdk_exporter_delivers_over_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets these win over the exporter's session-wide certificate_file.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    home = tmp_path / "home"
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-c", _CLI, "serve", "--home", str(home), "--port", str(port)),
            *("--certfile", str(cert), "--keyfile", str(key)),
        ],
        env={**os.environ, "CODETAPE_TOKEN": TOKEN},
    )
    try:
        url = f"https://127.0.0.1:{port}"
        context = ssl.create_default_context(cafile=str(cert))
        ready = urllib.request.Request(
            url + "/healthz", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        for _ in range(600):
            try:
                with urllib.request.urlopen(ready, context=context, timeout=10) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                assert process.poll() is None, "codetape serve exited"
                time.sleep(0.1)
        exporter = OTLPSpanExporter(
            endpoint=url + "/v1/traces",
            certificate_file=str(cert),
            headers={"authorization": f"Bearer {TOKEN}"},
            compression=Compression.Gzip,
        )
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("another-tool")
        with tracer.start_as_current_span("parent") as parent:
            parent.set_attribute("tries", 2)
            with tracer.start_as_current_span("child"):
                pass
        provider.shutdown()
        rows = Store(home)._query("SELECT name, parent_id IS NULL, attributes FROM spans")
        assert sorted((name, root) for name, root, _ in rows) == [
            ("child", False),
            ("parent", True),
        ]
        assert any('"tries":2' in attrs for _, _, attrs in rows)
    finally:
        process.terminate()
        process.wait(30)
