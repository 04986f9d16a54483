"""The host end of the runner's channel: framed messages over a child process's pipes.

Two kinds of frame come from the runner: ``<length>\\n`` and that many bytes of JSON (a
message), and ``b<length>\\n`` and that many raw bytes (a blob: a pickle of the state,
indexed here by its SHA-256, which a later message names). Code in the sandbox can write
frames too, so nothing read here is trusted: a frame over its cap is refused before it
is buffered, JSON nested deeper than ``MAX_DEPTH`` is refused before it is parsed, and a
body that is not a JSON object is refused; all of these raise ``ChannelBroken``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import time
from collections.abc import Callable
from itertools import accumulate
from typing import IO, Any

__all__ = [
    "MAX_DEPTH",
    "Channel",
    "ChannelBroken",
    "ChannelClosed",
    "ChannelTimeout",
    "frame",
    "nesting_depth",
    "parse_message",
]

# How deep a message may nest (objects and arrays). The protocol's own envelope takes a
# handful of levels; the runner refuses to send values nested deeper than 100.
MAX_DEPTH = 128
_HEADER_MAX = 32
_CHUNK = 1 << 20
# What a read for the next frame's header asks for: a reply fits, and a buffer this size
# costs nothing to allocate (1 MB, allocated and freed for every read, cost ~15 us).
_FIRST = 1 << 16
# A JSON string (with its escapes), and whatever is not a bracket: what a depth scan skips.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class ChannelClosed(Exception):
    """The runner went away (killed, out of memory, or crashed)."""


class ChannelBroken(ChannelClosed):
    """The runner's output is not the protocol: code in the sandbox wrote to it."""


class ChannelTimeout(Exception):
    """The runner did not answer before the deadline."""


def nesting_depth(body: bytes) -> int:
    """How deep the objects and arrays of a JSON text nest, found without parsing it
    (so without recursion): brackets inside strings do not count. An unterminated
    string's brackets count, so the depth is never under what a parser would reach."""
    shape = _NOT_BRACKET.sub(b"", _STRING.sub(b"", body))
    if not shape:
        return 0
    return max(accumulate(map(_STEP.__getitem__, shape)))


def parse_message(body: bytes, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """One message from the runner: a JSON object nested at most ``max_depth`` deep."""
    # A text cannot nest deeper than the brackets it holds: messages with few brackets
    # under the limit pass on that count alone, with no scan.
    opening = body.count(b"[") + body.count(b"{")
    depth = nesting_depth(body) if opening > max_depth else opening
    if depth > max_depth:
        raise ChannelBroken(f"a message nested {depth} levels deep (the limit is {max_depth})")
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ChannelBroken(f"a message that is not JSON ({type(exc).__name__})") from None
    if not isinstance(message, dict):
        raise ChannelBroken(f"a message that is a JSON {type(message).__name__}, not an object")
    return message


def frame(message: dict[str, Any]) -> bytes:
    """A message as the runner reads it: ``<length>\\n`` and the JSON."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return b"%d\n" % len(body) + body


def _pipe_reader(fd: int) -> Callable[[int, float | None], bytes | None]:
    """Reads of a pipe: at most ``most`` bytes (b"" at its end), None after ``timeout``
    seconds with nothing to read."""

    def read_some(most: int, timeout: float | None) -> bytes | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, most) if ready else None

    return read_some


class Channel:
    """Sends and receives the runner's messages. Reads are bounded by a deadline, so a
    code action that never returns cannot hang the host, and by size: a message over
    ``max_message`` bytes, a blob over ``max_blobs`` or blobs that add up to more than
    ``max_blobs`` before the message that names them are refused unread."""

    def __init__(
        self,
        process: Any,
        max_message: int = 64 << 20,
        max_blobs: int = 1 << 30,
    ) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self._in: IO[bytes] = process.stdin
        # A runner attached through Docker's API reads its own stream; a child
        # process's is a pipe.
        self._read_some = getattr(process.stdout, "read_some", None) or _pipe_reader(
            process.stdout.fileno()
        )
        self._buffer = bytearray()
        self.max_message = max_message
        self.max_blobs = max_blobs
        # Blobs received since the last ``take_blobs``, by their SHA-256.
        self._blobs: dict[str, bytes] = {}
        self._blob_bytes = 0

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._in.write(frame(message))
            self._in.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise ChannelClosed(str(exc)) from exc

    def take_blobs(self) -> dict[str, bytes]:
        """The blobs received so far (by digest), handed over and forgotten here."""
        blobs, self._blobs, self._blob_bytes = self._blobs, {}, 0
        return blobs

    def _read(self, deadline: float | None, most: int) -> bytes:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        chunk = self._read_some(most, timeout)
        if chunk is None:
            raise ChannelTimeout
        if not chunk:
            raise ChannelClosed("the runner closed its output")
        return chunk

    def _header(self, deadline: float | None) -> tuple[bool, int]:
        """The next frame's kind (a blob or not) and length."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > _HEADER_MAX:
                raise ChannelBroken(f"a garbled frame header {bytes(self._buffer[:32])!r}")
            self._buffer += self._read(deadline, _FIRST)
        header, _, _ = self._buffer.partition(b"\n")
        del self._buffer[: len(header) + 1]
        blob = header.startswith(b"b")
        digits = header[1:] if blob else header
        if not digits.isdigit() or len(digits) > 15:
            raise ChannelBroken(f"a garbled frame header {bytes(header[:32])!r}")
        return blob, int(digits)

    def _body(self, length: int, deadline: float | None) -> bytes:
        """Exactly ``length`` bytes: what is buffered, then reads of no more than what is
        still missing, so nothing past the frame is read."""
        if len(self._buffer) >= length:
            body = bytes(self._buffer[:length])
            del self._buffer[:length]
            return body
        chunks, self._buffer = [bytes(self._buffer)], bytearray()
        missing = length - len(chunks[0])
        while missing:
            chunk = self._read(deadline, min(missing, _CHUNK))
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def _over(self, blob: bool, length: int) -> str | None:
        if blob and self._blob_bytes + length > self.max_blobs:
            return (
                f"{self._blob_bytes + length} bytes of state with one reply, over the "
                f"{self.max_blobs}-byte limit (set by Limits.memory)"
            )
        if not blob and length > self.max_message:
            return (
                f"a {length}-byte message, over the {self.max_message}-byte limit "
                "(set by Limits.output_bytes)"
            )
        return None

    def receive(self, deadline: float | None = None) -> dict[str, Any]:
        """The next message (a JSON object); blobs that come before it are kept for
        ``take_blobs``."""
        while True:
            blob, length = self._header(deadline)
            over = self._over(blob, length)
            if over is not None:
                raise ChannelBroken(over)
            body = self._body(length, deadline)
            if not blob:
                return parse_message(body)
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            if digest not in self._blobs:
                self._blobs[digest] = body
                self._blob_bytes += length
