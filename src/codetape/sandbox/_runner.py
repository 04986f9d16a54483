"""The in-sandbox runner: executes code actions for the host, over stdin and stdout.

This file runs inside the sandbox as the source of ``python3 -c``: it imports only the
standard library and nothing of codetape. The host sends cloudpickle's source in the
first message, so the image needs nothing but ``python3``.

Framing: each message is ``<length>\\n`` followed by that many bytes of JSON. The state's
bytes (pickled variables, the checkpoint) go to the host as blob frames, ``b<length>\\n``
and the raw bytes, before the message that names them by their SHA-256; from the host,
binary values travel base64-encoded. The host never unpickles what this runner sends: it
stores the bytes and only ever hands them back to a sandbox. It checks every message
(size, depth, shape) and refuses one that is not the protocol, so this runner keeps its
messages under the host's size limit and its values under its depth limit.

Tool arguments leave as JSON with tuples, sets, bytes, dates, datetimes and Decimals
tagged; tool answers come back pickled by the host. After each step this runner stops
the threads and kills the processes the code left running (unless told to keep them);
it exits, killing the code's processes, as soon as the host's end of stdin closes.
"""

import ast
import base64
import builtins
import hashlib
import io
import json
import os
import pickle
import platform
import random
import reprlib
import select
import signal
import subprocess
import sys
import threading
import time
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
# One frame at a time on the channel, whichever thread sends it.
SEND_LOCK = threading.Lock()
# Set by ``init``: the largest message the host accepts, and whether this runner is
# alone in a container (then every other process in it is the code's).
LIMITS = {"max_message": 1 << 62, "contained": False}


class MessageTooLarge(ValueError):
    pass


def send(message):
    if os.getpid() != MAIN_PID:
        # A process the user's code forked must never speak for the runner.
        os._exit(0)
    body = json.dumps(message, default=repr).encode("utf-8", "surrogatepass")
    if len(body) > LIMITS["max_message"]:
        raise MessageTooLarge(
            "%d bytes, over the host's %d-byte limit of a message (set by "
            "Limits.output_bytes)" % (len(body), LIMITS["max_message"])
        )
    with SEND_LOCK:
        PROTO_OUT.write(b"%d\n" % len(body) + body)
        _SENT.clear()


# The blobs sent since the last message: the same bytes go once.
_SENT = set()


def send_blob(data, digest=None):
    """Send bytes of the state as a blob frame; the host names it by its SHA-256, which
    is returned for the message that refers to it."""
    if os.getpid() != MAIN_PID:
        os._exit(0)
    digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
    with SEND_LOCK:
        if digest not in _SENT:
            PROTO_OUT.write(b"b%d\n" % len(data))
            PROTO_OUT.write(data)
            _SENT.add(digest)
    return digest


def _end_everything():
    """The host is gone (the channel closed): kill the code's processes, then exit."""
    try:
        if LIMITS["contained"]:
            os.kill(-1, signal.SIGKILL)  # every process of the container but init and this
        else:
            _kill_descendants()
    except Exception:
        pass
    os._exit(0)


def _watch_channel():
    """Exit when the host's end of the channel closes, even while the code is busy (a
    ``while True: pass`` never lets the main thread read): a killed host must not leave
    its sandbox running."""
    poller = select.poll()
    poller.register(PROTO_IN.fileno(), 0)  # hang-up and errors only, never readable data
    while True:
        for _fd, events in poller.poll():
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                _end_everything()


threading.Thread(target=_watch_channel, name="codetape-channel-watch", daemon=True).start()


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
    """An fd the user's code (and its subprocesses) write to, read into a buffer that
    keeps ``limit`` bytes and counts the rest.

    A thread drains it while the code runs (so a writer never blocks on a full pipe);
    after the step the runner drains what is left itself, under the same lock: what the
    code wrote before that is kept, with no hand-off to the thread."""

    # Reads per drain under the lock: a process that goes on writing (a kept background
    # process) cannot hold a drain forever; what it writes later is the next step's.
    _READS = 64

    def __init__(self, fd, limit):
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, fd)
        os.close(write_fd)
        os.set_blocking(read_fd, False)  # the read end only: writers still block
        self._fd = read_fd
        self.limit = limit
        self.kept = bytearray()
        self.dropped = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while True:
            poller.poll()
            with self._lock:
                if not self._drain():
                    return

    def _drain(self):
        """Read what is in the pipe now (the lock held); False once every writer closed."""
        for _ in range(self._READS):
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self._keep(chunk)
        return True

    def _keep(self, data):
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))

    def take(self):
        """Everything written so far (up to the cap), and forget it."""
        with self._lock:
            self._drain()
            text = self.kept.decode("utf-8", "replace")
            dropped = self.dropped
            self.kept = bytearray()
            self.dropped = 0
        if dropped:
            text += "\n[codetape: output capped, %d more bytes dropped]\n" % dropped
        return text


class FinalAnswer(BaseException):
    """Raised by final_answer() to end the code action, as agents expect. ``tool``: the
    answer is the host's final_answer tool's; the host holds it, and asks for it back
    only when it holds a recorded answer (``send``). ``shown``: the host's description
    of the answer, for when it cannot be loaded here."""

    def __init__(self, value, tool=False, send=True, shown=None):
        super().__init__()
        self.value = value
        self.tool = tool
        self.send = send
        self.shown = shown


class ToolError(Exception):
    """A host tool raised; the message carries the host's exception type and text."""


def _exception_class(name):
    """The class of a host tool's error, named as the host named it (``module.Qualname``,
    or a builtin's name), so the step's error reads the same when replayed."""
    found = getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    module, _, qualname = name.rpartition(".")
    short = qualname.rpartition(".")[2]
    return type(short, (ToolError,), {"__module__": module or "builtins", "__qualname__": qualname})


def _encode(value):
    """A value for the host: JSON with tagged types (the ``codetape_values`` module the
    host sent); what has no encoding goes as its repr, marked."""
    return sys.modules["codetape_values"].encode(value)


def _final_value(value, limit):
    """A final answer for the host, encoded; one whose JSON is over ``limit`` bytes goes
    as its repr (cut), marked as such."""
    values = sys.modules["codetape_values"]
    try:
        encoded = values.encode(value)
        size = len(json.dumps(encoded))
    except (TypeError, ValueError, RecursionError) as exc:  # a library's odd value
        return values.opaque(value, "%s: %s" % (type(exc).__name__, exc))
    if size <= limit:
        return encoded
    marker = values.opaque(value, "%d bytes encoded, over the %d-byte limit" % (size, limit))
    marker["v"] = _cut(marker["v"], 2000)
    return marker


def _describe(done, limit):
    """The reply's ``final_answer``: its type and preview, and the value unless the host
    holds it already."""
    if done.tool and done.shown is not None:
        kind, shown = done.shown
    else:
        kind, shown = _qualified(type(done.value)), _mask(_preview(done.value))
    answer = {"type": kind, "preview": shown, "tool": done.tool}
    if done.send:
        answer["value"] = _final_value(done.value, limit)
    return answer


def _preview(value):
    try:
        return _repr.repr(value)
    except Exception as exc:
        return "<%s: repr failed: %s>" % (type(value).__name__, type(exc).__name__)


# Replaced by the state codec's repr when the host sends it (``init``): previews are
# taken alike on both sides.
_repr = reprlib.Repr()


def _user_traceback(exc, filename="<code action>"):
    """The traceback from the first frame of the user's code on: the runner's frames
    (and, for a SyntaxError, the parser's) are not the user's business."""
    te = traceback.TracebackException.from_exception(exc)
    frames = list(te.stack)
    first = next((i for i, f in enumerate(frames) if f.filename == filename), len(frames))
    te.stack = traceback.StackSummary.from_list(frames[first:])
    return "".join(te.format())


# The executor's bookkeeping in smolagents' state dict, not variables of the agent's code.
_SMOLAGENTS_KEYS = frozenset(["_print_outputs", "_operations_count"])
_FILES_CAP = 8 << 20


def _stat(pid):
    """(parent pid, state letter) of a process, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0].decode("ascii", "replace")


def _children(pid):
    """The direct children of ``pid`` (None when the kernel does not list them)."""
    found = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as handle:
                found.extend(int(child) for child in handle.read().split())
    except FileNotFoundError:
        return None if pid == os.getpid() else found
    except OSError:
        return found
    return found


def _descendant_table():
    """pid -> (parent pid, state) of this runner's descendants only: on a host, reading
    every process of the machine after each step would cost milliseconds."""
    table, frontier = {}, [os.getpid()]
    while frontier:
        children = _children(frontier.pop())
        if children is None:
            return None
        for child in children:
            stat = _stat(child)
            if stat is not None and child not in table:
                table[child] = stat
                frontier.append(child)
    return table


def _proc_table():
    """pid -> (parent pid, state letter) of every process this runner can see (outside
    a container, of its descendants, when the kernel lists children)."""
    if not LIMITS["contained"]:
        table = _descendant_table()
        if table is not None:
            return table
    # In a container, init and this runner are never the code's: not read at all, so
    # a step that left nothing running costs one listing of /proc.
    skip = (1, os.getpid()) if LIMITS["contained"] else ()
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in skip:
            stat = _stat(int(entry))
            if stat is not None:  # None: it ended while we looked
                table[int(entry)] = stat
    return table


def _others(table):
    """The code's processes: in a container every process but init and this runner,
    else this runner's descendants."""
    me = os.getpid()
    if LIMITS["contained"]:
        return [pid for pid in table if pid not in (1, me)]
    found, frontier = [], [me]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _kill_descendants():
    for pid in _others(_proc_table()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _end_processes():
    """Kill every process the code left running, and wait (a few seconds at most) until
    none is left but the dead ones: the next step starts with no process of this one."""
    if not os.path.isdir("/proc"):
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        table = _proc_table()
        running = [pid for pid in _others(table) if table[pid][1] != "Z"]
        if not running:
            break
        if LIMITS["contained"]:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
        for pid in running:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)
    try:
        subprocess._cleanup()  # reap the processes of Popen objects the code dropped
    except Exception:
        pass


def _end_threads(keep, signalled):
    """Stop the threads the code started: each gets SystemExit as soon as it runs
    Python again (one blocked in a call finishes that call first, and no more)."""
    try:
        import ctypes
    except ImportError:
        return
    targets = [
        t for t in threading.enumerate() if t not in keep and t not in signalled and t.is_alive()
    ]
    for thread in targets:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit)
        )
        signalled.add(thread)
    deadline = time.monotonic() + 1
    for thread in targets:
        thread.join(max(0, deadline - time.monotonic()))


def _become_subreaper():
    """Outside a container, orphans of the code's processes become this runner's
    children (Linux), so that they can be found and killed after the step."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


class _Executor:
    """Runs code the way the recorded step ran: ``runner`` (exec, the last expression's
    value as the result), ``exec`` (plain ``exec``, no result), ``callable`` (a named
    function ``fn(code, namespace)``) or ``smolagents`` (its LocalPythonExecutor)."""

    filename = "<code action>"

    def __init__(self, spec, namespace):
        self.kind = spec.get("kind") or "runner"
        self.spec = spec
        self.namespace = namespace
        self.target = None
        self.smol = None
        self._compiled = {}
        if self.kind == "exec":
            self.filename = "<string>"
        elif self.kind == "callable":
            module, _, qualname = spec["target"].partition(":")
            found = __import__(module, fromlist=["_"])
            for part in qualname.split("."):
                found = getattr(found, part)
            self.target = getattr(found, "__wrapped__", found)
            self.filename = "<string>"
        elif self.kind == "smolagents":
            from smolagents.local_python_executor import LocalPythonExecutor

            self.smol = LocalPythonExecutor(list(spec.get("imports") or []))
            self.namespace = self.smol.state

    def set_tools(self, stubs):
        if self.smol is not None:
            tools = dict(stubs)
            tools["final_answer"] = lambda *args, **kwargs: args[0] if args else kwargs
            self.smol.send_tools(tools)
        else:
            self.namespace.update(stubs)

    def variables(self):
        if self.smol is None:
            return list(self.namespace.items())
        items = [(k, v) for k, v in list(self.namespace.items()) if k not in _SMOLAGENTS_KEYS]
        return items + list(self.smol.custom_tools.items())

    def run(self, code, reply):
        if self.smol is not None:
            return self._run_smolagents(code, reply)
        if self.kind == "exec":
            exec(compile(code, self.filename, "exec"), self.namespace)
            return
        if self.kind == "callable":
            names = (self.spec.get("code"), self.spec.get("state"))
            if all(names):
                value = self.target(**{names[0]: code, names[1]: self.namespace})
            else:
                value = self.target(code, self.namespace)
            _set_result(reply, value)
            return
        body, last = self._compiled.get(code) or self._compile(code)
        exec(body, self.namespace)
        if last is not None:
            _set_result(reply, eval(last, self.namespace))

    def _compile(self, code):
        """The code's statements and its last expression (its value is the result),
        compiled; kept for the next step that runs the same code (an agent's retry)."""
        tree = ast.parse(code, self.filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = compile(ast.Expression(tree.body.pop().value), self.filename, "eval")
        compiled = (compile(tree, self.filename, "exec"), last)
        if len(self._compiled) >= 32:
            self._compiled.clear()
        self._compiled[code] = compiled
        return compiled

    def _run_smolagents(self, code, reply):
        try:
            output = self.smol(code)
        except BaseException as exc:
            reply["smolagents_output"] = str(self.namespace.get("_print_outputs", ""))
            raise _raised_by_interpreter(exc) from None
        reply["smolagents_output"] = str(self.namespace.get("_print_outputs", ""))
        # As recorded: the action's output, a final answer's included.
        _set_result(reply, output.output)


def _raised_by_interpreter(exc):
    """The error as the agent's code raised it: smolagents wraps it in an
    InterpreterError, whose message stays the one the agent was shown."""
    wrapped = exc
    name = type(exc).__name__
    if name == "InterpreterError" and exc.__cause__ is None and exc.__context__:
        wrapped = exc.__context__
    while type(wrapped).__name__ == "InterpreterError" and wrapped.__cause__ is not None:
        wrapped = wrapped.__cause__
    exc.codetape_type = _qualified(type(wrapped))
    return exc


def _qualified(cls):
    return sys.modules["codetape_state"].qualified_name(cls)


def _set_result(reply, value):
    if value is None:
        return
    reply["has_result"] = True
    reply["result_type"] = type(value).__name__
    try:
        reply["result"] = _mask(_repr.repr(value))
    except Exception as exc:
        reply["result"] = "<%s: repr failed: %s>" % (type(value).__name__, type(exc).__name__)


def _text(exc):
    try:
        return str(exc)
    except Exception as error:
        return "<str() failed: %s>" % type(error).__name__


def _cut(text, limit):
    if len(text) <= limit:
        return text
    return text[:limit] + "\n[codetape: cut, %d characters in all]" % len(text)


def _load_result(cloudpickle, name, reply):
    """A tool's answer, unpickled here; an answer of a class this image cannot load is
    an ImportError that says which class and why."""
    try:
        return cloudpickle.loads(base64.b64decode(reply["pickled"]))
    except Exception as exc:
        raise ImportError(
            "the result of tool %r (a %s) cannot be loaded in this sandbox: %s: %s; use an "
            "image that has what it needs (codetape image build)"
            % (name, reply.get("type") or "value", type(exc).__name__, exc)
        ) from None


def _mask(text):
    return sys.modules["codetape_state"].mask_addresses(text)


class Runner:
    def __init__(self):
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.executor = None
        self.tools = []
        self.bindings = {}  # variable name -> tool name, for tools kept under other names
        self.cloudpickle = None
        self.codec = None
        self.snapshots = None
        self.files_root = None
        self.stdout = self.stderr = None
        self.calls = 0
        self.tool_lock = threading.Lock()
        self.output_bytes = 1000000
        self.max_value = 8 << 20
        self.keep_background = False
        # The runner's own threads; any other is the code's, stopped after its step.
        self.own_threads = set()
        self.stopped_threads = set()

    # -- set-up ------------------------------------------------------------------

    def load(self, msg):
        """Load the modules the host sends (cloudpickle, the state codec): the first part
        of ``init``, which a container started ahead of need does before it is taken."""
        for name, source in msg["modules"]:
            module = types.ModuleType(name)
            module.__file__ = "<codetape:%s>" % name
            if name.count(".") == 0:
                module.__path__ = []
            sys.modules[name] = module
            exec(compile(source, module.__file__, "exec"), module.__dict__)
        return {"op": "loaded"}

    def init(self, msg):
        self.load(msg)  # none when they were loaded ahead
        global _repr
        self.cloudpickle = sys.modules["cloudpickle"]
        state_codec = sys.modules["codetape_state"]
        self.codec = state_codec.Codec(self.cloudpickle)
        _repr = state_codec.make_repr()
        self.snapshots = state_codec.Snapshotter(self.codec, _repr)
        self.files_root = msg.get("files_root")
        LIMITS["max_message"] = int(msg.get("max_message") or LIMITS["max_message"])
        self.max_value = int(msg.get("max_value") or self.max_value)
        # Killing "every process but init and this one" is only ever right in a
        # container of its own: the host says so, and Docker's marker file agrees.
        LIMITS["contained"] = bool(msg.get("contained")) and os.path.exists("/.dockerenv")
        if not LIMITS["contained"]:
            _become_subreaper()
        self.keep_background = bool(msg.get("keep_background"))
        limit = self.output_bytes = int(msg.get("output_bytes", 1000000))
        self.stdout = CappedPipe(1, limit)
        self.stderr = CappedPipe(2, limit)
        self.own_threads = set(threading.enumerate())
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0), write_through=True)
        spec = msg.get("executor") or {}
        if spec.get("kind", "runner") != "runner":
            self.namespace = {}
        self.executor = _Executor(spec, self.namespace)
        self.namespace = self.executor.namespace
        self.set_tools(msg.get("tools", []))
        return {
            "op": "ready",
            "python": platform.python_version(),
            "platform": "%s-%s" % (sys.platform, platform.machine()),
            "uid": os.getuid(),
        }

    def set_tools(self, names):
        self.tools = list(names)
        self.executor.set_tools(self._stubs())

    def _tool_stub(self, name):
        runner = self

        def call_tool(*args, **kwargs):
            message = {
                "op": "tool_call",
                "name": name,
                "args": _encode(list(args)),
                "keywords": _encode(dict(kwargs)),
            }
            with runner.tool_lock:  # one call at a time on the channel, even from threads
                runner.calls += 1
                message["id"] = runner.calls
                sys.stdout.flush()
                sys.stderr.flush()
                try:
                    send(message)
                except MessageTooLarge as exc:
                    raise ValueError("the arguments of tool %r are %s" % (name, exc)) from None
                reply = receive()
            return runner._tool_answer(name, reply)

        call_tool.__name__ = name
        call_tool.__qualname__ = name
        call_tool.__codetape_tool__ = name
        return call_tool

    def end_background(self):
        """Stop what the code left running after its step (unless it is to be kept)."""
        if self.keep_background:
            return
        _end_threads(self.own_threads, self.stopped_threads)
        _end_processes()

    def _tool_answer(self, name, reply):
        """What a tool call returns to the code: the host tool's answer, or its error
        raised. The final_answer tool's answer ends the step instead."""
        if reply.get("error"):
            err = reply["error"]
            raise _exception_class(err["type"])(err["message"])
        final = reply.get("final")
        if final is not None:
            send_back = bool(final.get("send"))
            shown = (str(final.get("type")), str(final.get("preview")))
            try:
                value = _load_result(self.cloudpickle, name, reply)
            except ImportError:  # its class is not in this image: the host describes it
                if send_back:
                    raise
                raise FinalAnswer(None, tool=True, send=False, shown=shown) from None
            raise FinalAnswer(value, tool=True, send=send_back)
        if reply.get("pickled") is not None:  # the answer, exactly as the tool returned it
            return _load_result(self.cloudpickle, name, reply)
        return reply.get("result")

    def _stubs(self):
        """The tools' stubs by name; the built-in final_answer unless the host bridged
        one (the agent's own final_answer tool wins)."""
        stubs = dict((name, self._tool_stub(name)) for name in self.tools)
        if self.executor.kind == "runner" and "final_answer" not in stubs:
            stubs["final_answer"] = self._final_answer
        return stubs

    @staticmethod
    def _final_answer(answer):
        raise FinalAnswer(answer)

    _final_answer.__func__.__codetape_tool__ = "final_answer"

    # -- state ---------------------------------------------------------------------

    def snapshot(self):
        """Each variable's fingerprint and preview, the module and tool bindings, and a
        checkpoint of the whole namespace (and its files). Bytes go out only when the
        host lacks them: it keeps what it was sent."""
        files = self._files()
        snap = self.snapshots.take(
            self.executor.variables(),
            self.executor.namespace.get("__name__"),
            (files.get("files"), files.get("reason")),
        )
        checkpoint = dict(snap["checkpoint"])
        if checkpoint.get("data") is not None:
            checkpoint["data"] = send_blob(checkpoint["data"], checkpoint.get("digest"))
        checkpoint["blobs"] = dict((k, send_blob(v, k)) for k, v in checkpoint["blobs"].items())
        if files:
            checkpoint["files_data"] = files.pop("data", None)
            checkpoint["files"] = files
        return {
            "variables": snap["variables"],
            "data": dict((k, send_blob(v, k)) for k, v in snap["data"].items()),
            "modules": snap["modules"],
            "tools": snap["tools"],
            "checkpoint": checkpoint,
        }

    def _files(self):
        """The files under the sandbox's /tmp, for the checkpoint (docker only)."""
        if not self.files_root:
            return {}
        try:
            with os.scandir(self.files_root) as entries:
                if next(entries, None) is None:
                    return {}  # nothing there: no walk
        except OSError:
            return {}
        found, total = {}, 0
        for top, _dirs, names in os.walk(self.files_root):
            for name in names:
                path = os.path.join(top, name)
                if not os.path.isfile(path) or os.path.islink(path):
                    continue
                total += os.path.getsize(path)
                if total > _FILES_CAP:
                    return {"reason": "its files under /tmp are over 8 MB"}
                with open(path, "rb") as handle:
                    found[os.path.relpath(path, self.files_root)] = handle.read()
        if not found:
            return {}
        data = pickle.dumps(found, protocol=4)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        record = {"files": digest}
        if digest not in self.snapshots.known:
            record["data"] = send_blob(data, digest)
            self.snapshots.known.add(digest)
        return record

    def set_state(self, msg):
        """Restore a checkpoint (and its files) into a fresh namespace."""
        large = dict((k, base64.b64decode(v)) for k, v in (msg.get("large") or {}).items())
        stubs = self._stubs()
        restored = self.codec.restore(base64.b64decode(msg["data"]), large, stubs)
        values = restored["values"]
        if restored.get("name") is not None:
            self.executor.namespace["__name__"] = restored["name"]
        for binding, tool in (msg.get("tools") or {}).items():
            if tool in stubs:
                values[binding] = stubs[tool]
        self.executor.namespace.update(values)
        if msg.get("files"):
            self._write_files(pickle.loads(base64.b64decode(msg["files"])))
        self.snapshots.known.update(
            "sha256:" + hashlib.sha256(v).hexdigest() for v in large.values()
        )
        self.snapshots.forget_checkpoint()
        return {"op": "state", "state": self.snapshot()}

    def _write_files(self, files):
        for relpath, data in files.items():
            path = os.path.join(self.files_root or "/tmp", relpath)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data)

    def set_vars(self, msg):
        errors = {}
        for name, encoded in msg["vars"].items():
            data = base64.b64decode(encoded)
            try:
                self.executor.namespace[name] = self.cloudpickle.loads(data)
            except Exception as exc:  # e.g. a module the value needs is not in this image
                errors[name] = "%s: %s" % (type(exc).__name__, exc)
        return {"op": "state", "state": self.snapshot(), "errors": errors}

    # -- running code ----------------------------------------------------------------

    def run(self, msg):
        code = msg["code"]
        if msg.get("random_state") is not None:
            random.setstate(pickle.loads(base64.b64decode(msg["random_state"])))
        elif msg.get("seed") is not None:
            random.seed(msg["seed"])
        reply = {"op": "result", "status": "ok", "has_result": False}
        try:
            self.executor.run(code, reply)
        except FinalAnswer as done:
            reply["final_answer"] = _describe(done, self.max_value)
        except BaseException as exc:  # the user's error, reported, never fatal here
            reply["status"] = "error"
            reply["error"] = {
                "type": getattr(exc, "codetape_type", None) or _qualified(type(exc)),
                "message": _cut(_text(exc), self.output_bytes),
                "traceback": _cut(_user_traceback(exc, self.executor.filename), self.output_bytes),
            }
        if os.getpid() != MAIN_PID:
            # A process the user's code forked has left that code: it must not go on
            # into the runner's reply (or wait on its output pipes).
            os._exit(0)
        self.end_background()
        reply["stdout"], reply["stderr"] = self._output()
        if "smolagents_output" in reply:
            reply["stdout"] = reply.pop("smolagents_output")
        reply["state"] = self.snapshot()
        return reply

    def _output(self):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        return self.stdout.take(), self.stderr.take()

    def serve(self):
        handlers = {
            "load": self.load,
            "init": self.init,
            "run": self.run,
            "set_vars": self.set_vars,
            "set_state": self.set_state,
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
                        "message": _cut("%s: %s" % (type(exc).__name__, _text(exc)), 10000),
                        "traceback": _cut(traceback.format_exc(), 10000),
                    }
                )


if __name__ == "__main__":
    Runner().serve()
