"""A real Arize Phoenix shows each recorded span's code and output.

Phoenix runs from its own virtual environment (``scripts/install-phoenix.sh``, which
``.ci/run`` calls), as ``phoenix serve`` on free ports of 127.0.0.1. codetape sends it a
recorded run over OTLP/HTTP under each convention setting, and each span is read back
through Phoenix's own client (``phoenix.client``, run by that environment's Python):
the span kind Phoenix gave it, the code as its input, the outcome as its output, the
model call's messages. Outside CI the test skips when Phoenix is not installed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import codetape
from codetape.tracer.internal import runtime

from .conftest import require
from .otlp_fixtures import (
    ANSWER,
    CODE,
    MODEL_OUTPUT,
    OUTCOMES,
    SYSTEM,
    TASK,
    dumps,
    record_run,
    span_key,
)

pytestmark = pytest.mark.slow

VENV = Path(os.environ.get("CODETAPE_PHOENIX_VENV", "/opt/codetape-phoenix"))
HOW = (
    "run scripts/install-phoenix.sh (it installs Arize Phoenix into its own virtual "
    "environment, /opt/codetape-phoenix, or where CODETAPE_PHOENIX_VENV says)"
)
# How long Phoenix may take to answer at all, and to show spans it was sent: bounds on
# waiting, not on speed (it starts in about 10 s).
START_WAIT_S = 240
SPANS_WAIT_S = 120

# Phoenix's client, in Phoenix's environment: one process for the module (importing
# phoenix takes seconds), asked for a trace's spans one JSON line at a time.
READER = """
import json, sys
from phoenix.client import Client
for line in sys.stdin:
    url, project, trace_id = json.loads(line)
    try:
        spans = Client(base_url=url).spans.get_spans(
            project_identifier=project, trace_ids=[trace_id], limit=1000
        )
        print(json.dumps({"spans": spans}, default=str), flush=True)
    except Exception as exc:  # the project does not exist until its first span
        print(json.dumps({"error": repr(exc)}), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Phoenix:
    """A running Phoenix: its URL, and its own client in its own environment."""

    def __init__(self, url: str, reader: subprocess.Popen[str]) -> None:
        self.url = url
        self.reader = reader

    def spans(self, project: str, trace_id: str, count: int) -> list[dict[str, Any]]:
        """The trace's spans as Phoenix's client returns them, once all ``count`` are
        in."""
        assert self.reader.stdin is not None
        assert self.reader.stdout is not None
        deadline = time.monotonic() + SPANS_WAIT_S
        while True:
            self.reader.stdin.write(json.dumps([self.url, project, trace_id]) + "\n")
            self.reader.stdin.flush()
            answer = json.loads(self.reader.stdout.readline() or '{"error": "reader exited"}')
            spans: list[dict[str, Any]] = answer.get("spans", [])
            if len(spans) >= count:
                return spans
            if time.monotonic() > deadline:
                pytest.fail(f"Phoenix has not shown {count} spans: {answer}")
            time.sleep(0.5)


def _stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """A Phoenix server started for this module, and its client."""
    require((VENV / "bin" / "phoenix").exists(), "Arize Phoenix", HOW)
    workdir = tmp_path_factory.mktemp("phoenix")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))}
    env.update(
        PHOENIX_WORKING_DIR=str(workdir),
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(_free_port()),
        PHOENIX_TELEMETRY_ENABLED="false",
    )
    log = (workdir / "phoenix.log").open("wb")
    server = subprocess.Popen(
        [str(VENV / "bin" / "phoenix"), "serve"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    reader = subprocess.Popen(
        [str(VENV / "bin" / "python"), "-c", READER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_WAIT_S
        while not _answers(url):
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (workdir / "phoenix.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"Phoenix did not start (exit code {server.poll()}):\n{tail}")
            time.sleep(0.5)
        yield Phoenix(url, reader)
    finally:
        _stop(reader)
        _stop(server)
        log.close()


@pytest.mark.parametrize("setting", ["openinference", "genai", "both"])
def test_phoenix_shows_the_code_and_the_output_of_each_span(
    phoenix: Phoenix, home: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    project = f"codetape-{setting}"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"openinference.project.name={project}")
    codetape.configure(home=home, otlp=phoenix.url, otlp_conventions=setting)
    run_id = record_run()
    assert runtime().provider.force_flush(10_000)

    spans = {
        span_key(s["name"], s["attributes"]): s for s in phoenix.spans(project, run_id, count=6)
    }
    assert sorted(spans) == ["chat", "run", "step 0", "step 1", "step 2", "tool"]
    assert {s["context"]["trace_id"] for s in spans.values()} == {run_id}
    kinds = {key: s["span_kind"] for key, s in spans.items()}
    assert kinds == {
        "run": "AGENT",
        "chat": "LLM",
        "tool": "TOOL",
        "step 0": "TOOL",
        "step 1": "TOOL",
        "step 2": "TOOL",
    }
    for i, code in enumerate(CODE):
        step = spans[f"step {i}"]["attributes"]
        assert step["codetape.step.index"] == i
        assert step["tool.name"] == "code_interpreter"
        # The outcome is the output whatever the setting (Phoenix reads GenAI's result).
        assert step["output.value"] == dumps(OUTCOMES[i])
        assert step["output.mime_type"] == "application/json"
        if setting == "genai":  # Phoenix shows GenAI's arguments as the tool's parameters
            assert step["tool.parameters.code"] == code
        else:
            assert step["input.value"] == code
            assert step["input.mime_type"] == "text/plain"
    assert spans["step 2"]["status_code"] == "ERROR"

    tool = spans["tool"]["attributes"]
    assert (tool["tool.name"], tool["output.value"]) == ("add", "6")

    chat = spans["chat"]["attributes"]
    assert chat["llm.input_messages.0.message.role"] == "system"
    assert chat["llm.input_messages.0.message.content"] == SYSTEM
    assert chat["llm.input_messages.1.message.content"] == TASK
    assert chat["llm.output_messages.0.message.content"] == MODEL_OUTPUT
    assert chat["llm.token_count.total"] == 150

    run = spans["run"]["attributes"]
    if setting == "genai":  # Phoenix makes GenAI's messages the agent's
        assert run["llm.input_messages.0.message.content"] == TASK
        assert run["llm.output_messages.0.message.content"] == ANSWER
    else:
        assert (run["input.value"], run["output.value"]) == (TASK, ANSWER)
