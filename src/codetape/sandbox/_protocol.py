"""The host end of the runner's channel: framed JSON over a child process's pipes."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from typing import IO, Any

__all__ = ["Channel", "ChannelBroken", "ChannelClosed", "ChannelTimeout"]


class ChannelClosed(Exception):
    """The runner went away (killed, out of memory, or crashed)."""


class ChannelBroken(ChannelClosed):
    """The runner's output is not the protocol: code in the sandbox wrote to it."""


class ChannelTimeout(Exception):
    """The runner did not answer before the deadline."""


class Channel:
    """Sends and receives the runner's messages. Reads are bounded by a deadline, so a
    code action that never returns cannot hang the host."""

    def __init__(self, process: subprocess.Popen[bytes], max_message: int = 1 << 30) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self._in: IO[bytes] = process.stdin
        self._out = process.stdout.fileno()
        self._buffer = bytearray()
        # Code in the sandbox can write to this channel: a message larger than the
        # sandbox could hold is not buffered, the runner is taken for broken.
        self.max_message = max_message

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        try:
            self._in.write(b"%d\n" % len(body) + body)
            self._in.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise ChannelClosed(str(exc)) from exc

    def _fill(self, deadline: float | None) -> None:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self._out], [], [], timeout)
        if not ready:
            raise ChannelTimeout
        chunk = os.read(self._out, 1 << 20)
        if not chunk:
            raise ChannelClosed("the runner closed its output")
        self._buffer += chunk

    def receive(self, deadline: float | None = None) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            if len(self._buffer) > 32:
                raise ChannelBroken(f"garbled header from the runner: {bytes(self._buffer[:32])!r}")
            self._fill(deadline)
        header, _, _ = self._buffer.partition(b"\n")
        try:
            length = int(header)
        except ValueError:
            raise ChannelBroken(f"garbled header from the runner: {bytes(header[:32])!r}") from None
        if length > self.max_message:
            raise ChannelBroken(
                f"the runner announced a {length}-byte message, over the "
                f"{self.max_message}-byte limit"
            )
        start = len(header) + 1
        while len(self._buffer) < start + length:
            self._fill(deadline)
        body = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        message: dict[str, Any] = json.loads(body)
        return message
