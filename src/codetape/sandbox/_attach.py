"""A container's runner spoken to over one Docker API attach connection.

``docker run -i`` relays every byte through the ``docker`` process: the host writes to
its pipe, it writes to dockerd, dockerd to the container, and back the same way. Here
the host creates and starts the container through the engine's API and attaches to it
itself: one relay fewer each way (a round trip ~30-40 us shorter), no ``docker`` process
to start (a cold start ~tens of ms shorter), and nothing on PATH needed but the engine.

``Attached`` looks to the sandbox like the child process it spoke to before: ``stdin``
to write frames to, ``stdout`` the channel reads from, ``stderr`` kept aside for when the
runner dies, and ``poll``. Docker frames each write of a container without a TTY (one
byte for the stream, three zero, four of length); ``_Streams`` splits them again.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from typing import Any

__all__ = ["Attached", "attach"]

# How much of the runner's own stderr is kept (its last bytes): a crash's traceback.
_ERR_KEEP = 1 << 20
_RECV = 1 << 20
# Room for a frame's start held over beside a full read (Docker's frames are 32 KB at
# most today; a longer one grows the buffer).
_HEADER_AND_MORE = 1 << 16
_STDERR = 2  # a frame's stream byte (1: stdout)


class _Streams:
    """The attach connection's bytes, split back into the runner's stdout and stderr."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.closed = False
        self.out = bytearray()
        self.err = bytearray()
        self._raw = b""  # the start of a frame not wholly received yet
        self._view = memoryview(bytearray(_RECV + _HEADER_AND_MORE))
        self._recv_into = getattr(sock, "recv_into", None) or self._recv_copy

    def _recv_copy(self, view: memoryview) -> int:
        """``recv_into`` for a channel that has only ``recv`` (an ssh:// engine's)."""
        data = self.sock.recv(len(view))
        view[: len(data)] = data
        return len(data)

    def _pump(self, timeout: float | None) -> bool:
        """Receive what the engine sent (waiting at most ``timeout``): False if nothing
        came in time. The end of the stream sets ``closed``."""
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if not pending:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return False
        # Into a buffer kept from read to read, after the part of a frame left over:
        # a fresh buffer per read costs more than the read.
        held = len(self._raw)
        if held:
            need = held + _HEADER_AND_MORE
            if held >= 8:  # the whole frame fits, however long the engine made it
                need = max(need, 8 + int.from_bytes(self._raw[4:8], "big"))
            if need > len(self._view):
                self._view = memoryview(bytearray(need))
            self._view[:held] = self._raw
        try:
            size = self._recv_into(self._view[held:])
        except Exception:  # reset, or closed here: the end of the stream
            size = 0
        if not size:
            self.closed = True
            return True
        view, at, size = self._view, 0, held + size
        while size - at >= 8:
            length = int.from_bytes(view[at + 4 : at + 8], "big")
            end = at + 8 + length
            if end > size:
                break
            (self.out if view[at] != _STDERR else self.err).extend(view[at + 8 : end])
            at = end
        self._raw = bytes(view[at:size])
        if len(self.err) > _ERR_KEEP:
            del self.err[: len(self.err) - _ERR_KEEP]
        return True

    def read(self, most: int, timeout: float | None) -> bytes | None:
        """At most ``most`` bytes of stdout (b"" once it ended), or None if none came
        within ``timeout`` seconds (None: wait). Stderr arriving meanwhile does not
        hold the deadline off."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.out:
            if self.closed:
                return b""
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left < 0:
                return None
            if not self._pump(left):
                return None
        if len(self.out) <= most:
            chunk, self.out = bytes(self.out), bytearray()
            return chunk
        chunk = bytes(self.out[:most])
        del self.out[:most]
        return chunk

    def drain(self, timeout: float) -> None:
        """Receive until the stream ends or ``timeout`` seconds pass, for its stderr:
        stdout is no longer read, and dropped."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            pumped = self._pump(max(0.0, deadline - time.monotonic()))
            self.out.clear()
            if not pumped or time.monotonic() >= deadline:
                return


class _Stdin:
    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def write(self, data: bytes) -> int:
        self._sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """End the runner's stdin (the container was made with ``StdinOnce``: the
        engine closes it when this end stops writing); the output can still be read."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)


class _Stdout:
    def __init__(self, streams: _Streams) -> None:
        self._streams = streams

    def read_some(self, most: int, timeout: float | None) -> bytes | None:
        return self._streams.read(most, timeout)

    def close(self) -> None:
        pass


class _Stderr:
    def __init__(self, streams: _Streams) -> None:
        self._streams = streams

    def read(self) -> bytes:
        """What the runner wrote to its stderr, once it ended (its last MB)."""
        self._streams.drain(2.0)
        data, self._streams.err = bytes(self._streams.err), bytearray()
        return data

    def close(self) -> None:
        pass


class Attached:
    """A started container's runner, attached: see the module's docstring. ``name`` is
    the container's; ``loaded`` whether the runner was sent its modules ahead."""

    def __init__(self, client: Any, name: str, connection: tuple[Any, Any]) -> None:
        self.client = client
        self.name = name
        self.loaded = False
        self.returncode: int | None = None
        sock, self._holder = connection
        self._sock = sock
        self._streams = _Streams(sock)
        self.stdin = _Stdin(sock)
        self.stdout = _Stdout(self._streams)
        self.stderr = _Stderr(self._streams)

    def poll(self) -> int | None:
        """The container's exit code once its runner ended (its output closed), else
        None."""
        if self.returncode is not None:
            return self.returncode
        if not self._streams.closed:
            self._streams._pump(0)  # the end of the stream, if it came
            if not self._streams.closed:
                return None
        try:
            state = self.client.api.inspect_container(self.name)["State"]
        except Exception:  # removed: it is not running
            self.returncode = -9
            return self.returncode
        if state.get("Running"):
            return None
        self.returncode = int(state.get("ExitCode", -9))
        return self.returncode

    def wait(self, timeout: float = 30.0) -> int:
        """Wait (at most ``timeout`` seconds) for the container to stop; its exit code
        (-9 when it could not be known)."""
        if self.returncode is None:
            try:
                self.returncode = int(
                    self.client.api.wait(self.name, timeout=timeout)["StatusCode"]
                )
            except Exception:  # removed, or still running past the timeout
                self.returncode = -9
        return self.returncode

    def detach(self) -> None:
        """Close this end of the connection: the engine ends the runner's stdin (it
        exits) and stops relaying to a reader that no longer reads."""
        self._streams.closed = True
        with contextlib.suppress(Exception):  # closed already (OSError, or ssh's own)
            self._sock.shutdown(socket.SHUT_RDWR)
        for end in (self._sock, self._holder, getattr(self._holder, "_response", None)):
            if end is not None:
                with contextlib.suppress(Exception):  # closed already
                    end.close()


def attach(client: Any, container: str) -> tuple[Any, Any]:
    """A raw socket on ``container``'s stdin, stdout and stderr (attached before it
    starts, so nothing it writes is missed), and the object that holds the HTTP
    response it came from (kept while the socket is used: collected, it closes it)."""
    holder = client.api.attach_socket(
        container, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
    )
    # Over a unix socket, docker-py hands a SocketIO: its socket is what select reads
    # (over TLS, the SSL socket itself).
    sock = holder if isinstance(holder, socket.socket) else getattr(holder, "_sock", holder)
    sock.setblocking(True)
    return sock, holder
