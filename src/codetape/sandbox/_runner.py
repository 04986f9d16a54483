"""The in-sandbox runner: executes code actions for the host, over stdin and stdout.

This file runs inside the sandbox as the source of ``python3 -c``: it imports only the
standard library and nothing of codetape. The host sends cloudpickle's source in the
first message, so the image needs nothing but ``python3``.

Framing: each message is ``<length>\\n`` followed by that many bytes of JSON. Binary
values (pickled variables) travel base64-encoded. The host never unpickles what this
runner sends: it stores the bytes and only ever hands them back to a sandbox.
"""

import ast
import base64
import builtins
import hashlib
import io
import json
import os
import platform
import random
import reprlib
import sys
import threading
import traceback
import types

MAIN_PID = os.getpid()
# The protocol gets private copies of the original stdin and stdout; the user's code
# gets /dev/null as stdin and pipes (read by this runner, capped) as stdout and stderr.
PROTO_IN = os.fdopen(os.dup(0), "rb", buffering=65536)
PROTO_OUT = os.fdopen(os.dup(1), "wb", buffering=0)
_devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(_devnull, 0)
os.close(_devnull)


def send(message):
    if os.getpid() != MAIN_PID:
        # A process the user's code forked must never speak for the runner.
        os._exit(0)
    body = json.dumps(message, default=repr).encode("utf-8", "surrogatepass")
    PROTO_OUT.write(b"%d\n" % len(body) + body)


def _read_exact(n):
    chunks = []
    while n:
        chunk = PROTO_IN.read(n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def receive():
    header = PROTO_IN.readline()
    if not header.endswith(b"\n"):
        raise EOFError
    return json.loads(_read_exact(int(header)))


class CappedPipe:
    """An fd the user's code (and its subprocesses) write to, read by a thread into a
    buffer that keeps ``limit`` bytes and counts the rest."""

    def __init__(self, fd, limit):
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, fd)
        os.close(write_fd)
        self.limit = limit
        self.kept = bytearray()
        self.dropped = 0
        self._cond = threading.Condition()
        self._marks = 0
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        threading.Thread(target=self._pump, daemon=True).start()

    _MARK = b"\x00codetape-drain\x00"

    def _pump(self):
        pending = b""
        while True:
            chunk = self._reader.read(65536)
            if not chunk:
                return
            data = pending + chunk
            with self._cond:
                while self._MARK in data:
                    before, data = data.split(self._MARK, 1)
                    self._keep(before)
                    self._marks += 1
                    self._cond.notify_all()
                # Hold back a tail that could be the start of a marker.
                keep = len(data) - len(self._MARK) + 1
                if keep > 0:
                    self._keep(data[:keep])
                    pending = data[keep:]
                else:
                    pending = data

    def _keep(self, data):
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))

    def mark(self, fd):
        """Put a marker after everything written to ``fd`` so far; ``wait`` for it."""
        with self._cond:
            target = self._marks + 1
        os.write(fd, self._MARK)
        return target

    def wait(self, target):
        with self._cond:
            self._cond.wait_for(lambda: self._marks >= target, timeout=5)

    def take(self):
        with self._cond:
            text = self.kept.decode("utf-8", "replace")
            dropped = self.dropped
            self.kept = bytearray()
            self.dropped = 0
        if dropped:
            text += "\n[codetape: output capped, %d more bytes dropped]\n" % dropped
        return text


_IMMUTABLE = (str, bytes, int, float, complex, bool, frozenset, range, type(None))


class FinalAnswer(BaseException):
    """Raised by final_answer() to end the code action, as agents expect."""

    def __init__(self, value):
        super().__init__()
        self.value = value


class ToolError(Exception):
    """A host tool raised; the message carries the host's exception type and text."""


def _exception_class(name):
    found = getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return type(name, (ToolError,), {})


def _jsonable(value):
    try:
        json.dumps(value)
        return value, True
    except (TypeError, ValueError):
        return repr(value), False


# Previews are long here on purpose: the host redacts secrets and only then shortens
# them, so a secret is never cut in two before it can be recognised.
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 4000
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 12
_repr.maxlevel = 3


def _user_traceback(exc):
    """The traceback from the first frame of the user's code on: the runner's frames
    (and, for a SyntaxError, the parser's) are not the user's business."""
    te = traceback.TracebackException.from_exception(exc)
    frames = list(te.stack)
    first = next((i for i, f in enumerate(frames) if f.filename == "<code action>"), len(frames))
    te.stack = traceback.StackSummary.from_list(frames[first:])
    return "".join(te.format())


class Runner:
    def __init__(self):
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.sent = set()  # digests whose bytes the host already has
        self.tools = []
        self.cloudpickle = None
        self.stdout = self.stderr = None
        self.calls = 0
        self.tool_lock = threading.Lock()
        # Immutable values cannot change: describe and pickle each once. The cache holds
        # the object, so its id cannot be reused by another while cached.
        self.immutable = {}

    # -- set-up ------------------------------------------------------------------

    def init(self, msg):
        for name, source in msg["modules"]:
            module = types.ModuleType(name)
            module.__file__ = "<codetape:%s>" % name
            if name.count(".") == 0:
                module.__path__ = []
            sys.modules[name] = module
            exec(compile(source, module.__file__, "exec"), module.__dict__)
        self.cloudpickle = sys.modules["cloudpickle"]
        limit = int(msg.get("output_bytes", 1000000))
        self.stdout = CappedPipe(1, limit)
        self.stderr = CappedPipe(2, limit)
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0), write_through=True)
        self.set_tools(msg.get("tools", []))
        self.namespace["final_answer"] = self._final_answer
        return {
            "op": "ready",
            "python": platform.python_version(),
            "platform": "%s-%s" % (sys.platform, platform.machine()),
            "uid": os.getuid(),
        }

    def set_tools(self, names):
        self.tools = list(names)
        for name in names:
            self.namespace[name] = self._tool_stub(name)

    def _tool_stub(self, name):
        runner = self

        def call_tool(*args, **kwargs):
            try:
                payload = json.dumps({"args": args, "kwargs": kwargs})
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    "arguments of tool %r must be JSON-serializable: %s" % (name, exc)
                ) from None
            with runner.tool_lock:  # one call at a time on the channel, even from threads
                runner.calls += 1
                sys.stdout.flush()
                sys.stderr.flush()
                send({"op": "tool_call", "id": runner.calls, "name": name, "payload": payload})
                reply = receive()
            if reply.get("error"):
                err = reply["error"]
                raise _exception_class(err["type"])(err["message"])
            return reply.get("result")

        call_tool.__name__ = name
        call_tool.__qualname__ = name
        call_tool.__codetape_tool__ = True
        return call_tool

    @staticmethod
    def _final_answer(value):
        raise FinalAnswer(value)

    # -- state ---------------------------------------------------------------------

    def snapshot(self):
        # Values go out only when the host lacks them: the host keeps the bytes of the
        # previous snapshot, so "sent" is exactly that snapshot's digests.
        state, sent = {}, set()
        for name, value in list(self.namespace.items()):
            if name.startswith("__") or isinstance(value, types.ModuleType):
                continue
            if getattr(value, "__codetape_tool__", False) or value is self._final_answer:
                continue
            state[name] = var = self._variable(value, with_data=True)
            if var["digest"]:
                sent.add(var["digest"])
        self.sent = sent
        return state

    def _variable(self, value, with_data=False):
        cached = self.immutable.get(id(value))
        if cached is not None and cached[0] is value:
            var, data = dict(cached[1]), cached[2]
        else:
            var, data = self._describe(value)
            if type(value) in _IMMUTABLE and data is not None:
                self.immutable[id(value)] = (value, dict(var), data)
        if with_data and data is not None and var["digest"] not in self.sent:
            var["data"] = base64.b64encode(data).decode("ascii")
        return var

    def _describe(self, value):
        """The variable's record and its pickled bytes (None when it cannot be pickled)."""
        cls = type(value)
        kind = (
            cls.__qualname__
            if cls.__module__ == "builtins"
            else "%s.%s" % (cls.__module__, cls.__qualname__)
        )
        try:
            shown = _repr.repr(value)
        except Exception as exc:
            shown = "<%s: repr failed: %s>" % (kind, type(exc).__name__)
        try:
            data = self.cloudpickle.dumps(value, protocol=4)
        except Exception as exc:
            reason = "cannot be serialized: %s: %s" % (type(exc).__name__, exc)
            return {
                "type": kind,
                "preview": shown,
                "size": 0,
                "digest": None,
                "reason": reason,
            }, None
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return {"type": kind, "preview": shown, "size": len(data), "digest": digest}, data

    def set_vars(self, msg):
        errors = {}
        for name, encoded in msg["vars"].items():
            data = base64.b64decode(encoded)
            try:
                self.namespace[name] = self.cloudpickle.loads(data)
            except Exception as exc:  # e.g. a module the value needs is not in this image
                errors[name] = "%s: %s" % (type(exc).__name__, exc)
                continue
            self.sent.add("sha256:" + hashlib.sha256(data).hexdigest())
        return {"op": "state", "state": self.snapshot(), "errors": errors}

    # -- running code ----------------------------------------------------------------

    def run(self, msg):
        code = msg["code"]
        if msg.get("seed") is not None:
            random.seed(msg["seed"])
        reply = {"op": "result", "status": "ok", "has_result": False}
        try:
            tree = ast.parse(code, "<code action>", "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, "<code action>", "exec"), self.namespace)
            if last is not None:
                value = eval(compile(last, "<code action>", "eval"), self.namespace)
                if value is not None:
                    reply["has_result"] = True
                    reply["result_type"] = type(value).__name__
                    try:
                        reply["result"] = _repr.repr(value)
                    except Exception as exc:
                        reply["result"] = "<%s: repr failed: %s>" % (
                            type(value).__name__,
                            type(exc).__name__,
                        )
        except FinalAnswer as done:
            value, is_json = _jsonable(done.value)
            reply["final_answer"] = {
                "value": value,
                "json": is_json,
                "type": type(done.value).__name__,
            }
        except BaseException as exc:  # the user's error, reported, never fatal here
            reply["status"] = "error"
            reply["error"] = {
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": _user_traceback(exc),
            }
        if os.getpid() != MAIN_PID:
            # A process the user's code forked has left that code: it must not go on
            # into the runner's reply (or wait on its output pipes).
            os._exit(0)
        reply["stdout"], reply["stderr"] = self._output()
        reply["state"] = self.snapshot()
        return reply

    def _output(self):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        # Both markers first, then both waits: the two pumps drain at the same time.
        out_mark, err_mark = self.stdout.mark(1), self.stderr.mark(2)
        self.stdout.wait(out_mark)
        self.stderr.wait(err_mark)
        return self.stdout.take(), self.stderr.take()

    def serve(self):
        handlers = {
            "init": self.init,
            "run": self.run,
            "set_vars": self.set_vars,
            "snapshot": lambda msg: {"op": "state", "state": self.snapshot()},
            "set_tools": lambda msg: (self.set_tools(msg["tools"]), {"op": "ok"})[1],
        }
        while True:
            try:
                msg = receive()
            except EOFError:
                return
            handler = handlers.get(msg.get("op"))
            if handler is None:
                send({"op": "fatal", "message": "unknown op %r" % msg.get("op")})
                continue
            try:
                reply = handler(msg)
                if "id" in msg:  # the host matches replies to requests by id
                    reply["id"] = msg["id"]
                send(reply)
            except Exception as exc:
                send(
                    {
                        "op": "fatal",
                        "id": msg.get("id"),
                        "message": "%s: %s" % (type(exc).__name__, exc),
                        "traceback": traceback.format_exc(),
                    }
                )


if __name__ == "__main__":
    Runner().serve()
