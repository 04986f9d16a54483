"""The sandbox speaks to its container over one Docker API attach connection: no
``docker`` process on the way, and Docker's stream framing split back into the runner's
stdout and stderr exactly, however the bytes arrive."""

from __future__ import annotations

import contextlib
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
from codetape.errors import SandboxError
from codetape.sandbox._attach import _Streams
from codetape.sandbox._backends import size_bytes

from .sandbox_fixtures import containers_of_run

LIMITS = Limits(timeout_s=60, memory="256m")
HANG_GUARD_S = 60  # a bound on a hang, not a speed claim


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


def test_a_flood_of_stderr_does_not_hold_off_the_deadline() -> None:
    """Code in the sandbox can write to the container's stderr without end; a read for
    the runner's reply still gives up at its deadline (its step times out)."""
    host, engine = socket.socketpair()
    streams = _Streams(host)
    stop = threading.Event()

    def flood() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                engine.sendall(docker_frame(2, b"x" * 4096))

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    got: list[bytes | None] = []
    reader = threading.Thread(target=lambda: got.append(streams.read(10, timeout=0.2)))
    reader.start()
    reader.join(HANG_GUARD_S)
    stop.set()
    hung = reader.is_alive()
    engine.close()
    flooder.join(HANG_GUARD_S)
    reader.join(HANG_GUARD_S)
    host.close()
    assert not hung, "the read never gave up while stderr kept coming"
    assert got == [None]  # a timeout, not an end and not data
    assert 0 < len(streams.err) <= 1 << 20  # the last MB of it kept


def test_sizes_are_read_as_docker_run_reads_them() -> None:
    assert size_bytes("512m", "memory") == 512 << 20
    assert size_bytes("1GiB", "shm") == 1 << 30
    assert size_bytes("1.5g", "memory") == 3 << 29
    assert size_bytes("2t", "memory") == 2 << 40
    assert size_bytes("4096", "shm") == 4096
    with pytest.raises(SandboxError, match=r"Limits.memory = 'lots' is not a size"):
        size_bytes("lots", "memory")


@pytest.mark.docker
def test_limits_in_binary_units_reach_the_container(
    home: Path, docker_image: str, docker_api: Any
) -> None:
    limits = Limits(memory="256MiB", shm="1GiB", timeout_s=60)
    with codetape.run("units") as run, Sandbox(image=docker_image, limits=limits) as sb:
        assert sb.run("x = 1").status == "ok"
        [container] = containers_of_run(docker_api, run.id, running_only=True)
        host_config = docker_api.api.inspect_container(container.id)["HostConfig"]
    assert (host_config["Memory"], host_config["ShmSize"]) == (256 << 20, 1 << 30)
    with pytest.raises(SandboxError, match="is not a size"):
        Sandbox(image=docker_image, limits=Limits(memory="lots")).run("x = 1")


@pytest.mark.docker
def test_code_flooding_the_containers_stderr_times_out_and_the_sandbox_goes_on(
    home: Path, docker_image: str
) -> None:
    """Code writes to the container's own stderr (not its captured stderr) without
    end: the step still ends at its limit as a timeout, and the next step runs in a
    new container with the variables of the last good step."""
    with codetape.run("flood"), Sandbox(image=docker_image, limits=Limits(timeout_s=3)) as sb:
        assert sb.run("kept = 41").status == "ok"
        flooded = sb.run(
            "import os\n"
            "fd = os.open('/proc/1/fd/2', os.O_WRONLY)\n"
            "while True:\n"
            "    os.write(fd, b'x' * 65536)"
        )
        after = sb.run("kept + 1")
    assert (flooded.status, flooded.error and flooded.error.type) == ("timeout", "TimeoutError")
    assert (after.status, after.result) == ("ok", "42")


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
