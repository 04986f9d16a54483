"""The sandbox speaks to its container over one Docker API attach connection: no
``docker`` process on the way, and Docker's stream framing split back into the runner's
stdout and stderr exactly, however the bytes arrive."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import codetape
from codetape import Limits, Sandbox
from codetape.sandbox._attach import _Streams

LIMITS = Limits(timeout_s=60, memory="256m")


def docker_frame(stream: int, payload: bytes) -> bytes:
    """One frame as Docker writes it for a container without a TTY."""
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def read_all(streams: _Streams) -> bytes:
    chunks = []
    while chunk := streams.read(1 << 16, timeout=10):
        chunks.append(chunk)
    return b"".join(chunks)


def test_frames_cut_anywhere_come_out_whole_and_stderr_apart() -> None:
    """Frames sent a byte at a time, in odd slices, and one longer than the receive
    buffer: stdout comes out byte for byte, stderr is kept apart, and the end of the
    stream reads as the end."""
    host, engine = socket.socketpair()
    out = os.urandom(3_000_000)  # one frame longer than a receive
    small = [os.urandom(n) for n in (1, 7, 8, 9, 4096, 40_000)]
    wire = docker_frame(1, b"first") + docker_frame(2, b"Traceback: boom\n")
    wire += b"".join(docker_frame(1, piece) for piece in small)
    wire += docker_frame(1, out) + docker_frame(2, b"more err") + docker_frame(1, b"last")

    def send() -> None:
        at = 0
        for size in [1] * 30 + [3, 5, 8, 13, 21, 1 << 20]:  # then the rest at once
            engine.sendall(wire[at : at + size])
            at += size
            time.sleep(0.001)
        engine.sendall(wire[at:])
        engine.close()

    sender = threading.Thread(target=send)
    sender.start()
    streams = _Streams(host)
    got = read_all(streams)
    sender.join()
    assert got == b"first" + b"".join(small) + out + b"last"
    assert bytes(streams.err) == b"Traceback: boom\nmore err"
    assert streams.read(10, timeout=0) == b""  # ended, not timed out
    host.close()


def test_nothing_to_read_is_a_timeout_not_an_end() -> None:
    host, engine = socket.socketpair()
    streams = _Streams(host)
    engine.sendall(docker_frame(1, b"ab")[:5])  # half a header
    assert streams.read(10, timeout=0.05) is None
    engine.sendall(docker_frame(1, b"ab")[5:])
    assert streams.read(1, timeout=1) == b"a"
    assert streams.read(10, timeout=1) == b"b"
    engine.close()
    assert streams.read(10, timeout=1) == b""
    host.close()


@pytest.mark.docker
def test_the_sandbox_needs_no_docker_command(
    home: Path, docker_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no ``docker`` on PATH the sandbox still starts, runs steps with tool calls
    and records them: it talks to the engine alone."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no docker command

    def double(n: int) -> int:
        return 2 * n

    with codetape.run("no-cli") as run, Sandbox(image=docker_image, tools=[double]) as sb:
        first = sb.run("x = double(21)")
        second = sb.run("x + 1")
    assert (first.status, second.status, second.result) == ("ok", "ok", "43")
    steps = codetape.Store().steps(run.id)
    assert [len(s.tool_calls) for s in steps] == [1, 0]


@pytest.mark.docker
def test_megabytes_each_way_through_a_tool_arrive_intact(home: Path, docker_image: str) -> None:
    """5 MB the code makes goes to a host tool as an argument, and 5 MB the tool makes
    comes back as its answer: both sides see the same bytes (many stream frames each
    way, the answer's interleaved with nothing else)."""
    seen: dict[str, Any] = {}
    answer = os.urandom(5_000_000)

    def exchange(data: bytes) -> bytes:
        seen["digest"] = hashlib.sha256(data).hexdigest()
        return answer

    with (
        codetape.run("big-tool"),
        Sandbox(image=docker_image, tools=[exchange], limits=LIMITS) as sb,
    ):
        result = sb.run(
            "import hashlib, random\n"
            "data = random.Random(7).randbytes(5_000_000)\n"
            "sent = hashlib.sha256(data).hexdigest()\n"
            "back = hashlib.sha256(exchange(data)).hexdigest()\n"
            "print(sent, back)"
        )
    assert result.status == "ok", result.error
    sent, back = result.stdout.split()
    assert sent == seen["digest"]
    assert back == hashlib.sha256(answer).hexdigest()
