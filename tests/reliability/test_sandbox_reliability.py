"""The sandbox: the host's side of the channel trusts nothing.

Code in a sandbox shares a process with the runner, so it can write anything to the
channel to the host, leave processes and threads behind, and outlive a host that dies.
Each test here runs hostile or careless code in the real Docker sandbox (the offline
image ``$CODETAPE_IMAGE``, ``codetape/python:bookworm``) and checks what a user of
codetape would notice: ``Sandbox.run`` returns a step that says what happened (it never
raises for what the code did), the host's memory stays its own, no container or process
outlives its host or its step, ``/dev/shm`` has the size asked for, the doctor and the
sandbox say when the container runtime has a known escape, and tools hand the code real
types both ways, recorded and replayed as before.

Every test needs a running Docker engine and the image: it skips without them, and fails
under ``CI=true``.
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import codetape
from codetape import Limits, Sandbox, StepResult
from codetape.cli import cli
from codetape.tracer.internal import RunRecorder

from ..sandbox_fixtures import host_processes_with
from ..test_sandbox_hardening import FIND_CHANNEL

pytestmark = pytest.mark.docker

LIMITS = Limits(timeout_s=20, memory="256m", pids=64, tmpfs="16m", output_bytes=10_000)
# A bound on waiting for something that must happen (a container to stop), not a claim
# about how fast it happens: the tests wait for the event, and fail only if it never comes.
EVENTUALLY_S = 90.0
PID_LABEL = "codetape.sandbox.pid"


@contextmanager
def sandbox_in_run(
    image: str, name: str, limits: Limits = LIMITS, **kwargs: Any
) -> Iterator[tuple[Sandbox, RunRecorder]]:
    with codetape.run(name) as run, Sandbox(image=image, limits=limits, **kwargs) as sb:
        yield sb, run


def ok(result: StepResult) -> StepResult:
    assert result.status == "ok", (result.status, result.error)
    return result


def probe(sb: Sandbox, code: str) -> Any:
    """Run ``code`` (which sets ``out``) and return ``out``, read as JSON from stdout."""
    result = ok(sb.run(code + "\nimport json as _json\nprint(_json.dumps(out))"))
    return json.loads(result.stdout)


def eventually(check: Any, what: str) -> None:
    deadline = time.monotonic() + EVENTUALLY_S
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)


# -- 6. every message from the sandbox is checked before use ------------------------------

# Code in the sandbox finds the runner's channel to the host (the write-only pipe that is
# neither its stdout nor its stderr) and the id of the request it runs for, and writes a
# frame of its own: ``frame(body)``.
FORGE = (
    FIND_CHANNEL
    + """
import sys, time
request = None
_frame = sys._getframe()
while _frame is not None:
    _msg = _frame.f_locals.get("msg")
    if isinstance(_msg, dict) and _msg.get("op") == "run":
        request = _msg["id"]
    _frame = _frame.f_back
assert request is not None, "no request id found"

def frame(body):
    os.write(channel, b"%d\\n" % len(body) + body)
"""
)

DEEP = "[" * 100_000 + "]" * 100_000
# What hostile code writes (the body of one frame), and what the step's error must say.
FORGED = {
    "malformed_frame": ("b'hello'", "not JSON"),
    "deeply_nested_tool_call": (
        f'b\'{{"op":"tool_call","id":1,"name":"echo","payload":"{DEEP}","args":[{DEEP}]}}\'',
        "nested 100002 levels deep",
    ),
    "tool_call_arguments_of_the_wrong_shape": (
        'b\'{"op":"tool_call","id":1,"name":"echo","payload":"{\\\\"args\\\\": 5}","args":5}\'',
        "a tool call whose args is wrong",
    ),
    "result_error_of_the_wrong_shape": (
        'b\'{"op":"result","status":"error","error":"boom","state":{},'
        '"id":"%s"}\' % request.encode()',
        "the reply to a code action whose error is wrong",
    ),
    "state_snapshot_of_the_wrong_shape": (
        'b\'{"op":"result","status":"ok","state":{"variables":[1,2]},'
        '"id":"%s"}\' % request.encode()',
        "the reply to a code action whose state.variables is wrong",
    ),
}


def echo(*args: Any, **kwargs: Any) -> Any:
    return [list(args), kwargs]


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_message_the_code_forged_ends_its_step_as_an_error_never_the_hosts_call(
    case: str, home: Path, strict: None, docker_image: str
) -> None:
    """Run returns (it does not raise), the step is recorded as an error that says what
    was wrong with the message, and the next step has the variables of the last good one."""
    body, reason = FORGED[case]
    with sandbox_in_run(docker_image, f"forged-{case}", tools=[echo]) as (sb, run):
        ok(sb.run("kept = 41"))
        forged = sb.run(FORGE + f"frame({body})\ntime.sleep(60)\n")
        after = sb.run("kept + 1")
    assert forged.status == "error"
    assert forged.error is not None
    assert forged.error.type == "SandboxProtocolError"
    assert reason in forged.error.message
    assert "restored from the last good step" in forged.error.message
    assert (after.status, after.result) == ("ok", "42")
    recorded = codetape.Store(home).step(run.id, 1)
    assert recorded.status == "error"
    assert recorded.error is not None
    assert reason in recorded.error.message


def test_code_that_breaks_the_runner_ends_its_own_step_as_an_error(
    home: Path, strict: None, docker_image: str
) -> None:
    """Code can break the runner it shares a process with (here: its snapshot); the
    runner then fails the request, and the step says so instead of ``run`` raising."""
    with sandbox_in_run(docker_image, "broken-runner") as (sb, _):
        ok(sb.run("kept = 41"))
        broken = sb.run("import sys\nsys.modules['__main__'].Runner.snapshot = None")
        after = sb.run("kept + 1")
    assert broken.status == "error"
    assert broken.error is not None
    assert broken.error.type == "SandboxError"
    assert "the sandbox runner failed" in broken.error.message
    assert (after.status, after.result) == ("ok", "42")


def test_a_state_that_cannot_be_restored_fails_one_step_then_the_sandbox_goes_on(
    home: Path, strict: None, docker_image: str
) -> None:
    """A value whose unpickling raises is in the last good state when the sandbox must
    be replaced (a timeout): the next step says the variables are lost, and the
    sandbox goes on, empty, instead of ``run`` raising."""
    limits = LIMITS.model_copy(update={"timeout_s": 3})
    fragile = (
        "def _refuse():\n"
        "    raise RuntimeError('this value refuses to be restored')\n"
        "class Fragile:\n"
        "    def __reduce__(self):\n"
        "        return (_refuse, ())\n"
        "fragile = Fragile()\n"
    )
    with sandbox_in_run(docker_image, "unrestorable", limits=limits) as (sb, _):
        ok(sb.run(fragile))
        assert sb.run("while True:\n    pass").status == "timeout"
        lost = sb.run("1 + 1")
        fresh = sb.run("'fragile' in dir()")
    assert lost.status == "error"
    assert lost.error is not None
    assert "could not be restored" in lost.error.message
    assert (fresh.status, fresh.result) == ("ok", "False")


HOST_MEMORY_CHILD = """
import json, resource, sys
import codetape
codetape.configure(home=sys.argv[1], otlp=False)
# The default memory limit (512m): today's frame of 1000 MiB is under 2 x 512m + 64 MB.
limits = codetape.Limits(timeout_s=5, output_bytes=10_000)
with codetape.run("huge-frame"), codetape.Sandbox(image=sys.argv[2], limits=limits) as sb:
    assert sb.run("1").ok
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    flooded = sb.run(sys.argv[3])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    after = sb.run("6 * 7")
print(json.dumps({"grew_mib": (peak - before) / 1024, "status": flooded.status,
                  "error": flooded.error.message if flooded.error else None,
                  "after": after.result}))
"""


def test_a_frame_over_the_output_cap_is_refused_before_the_host_buffers_it(
    home: Path, docker_image: str, tmp_path: Path
) -> None:
    """A frame that claims 1000 MiB, then 300 MiB streamed: the cap follows
    ``output_bytes`` (not the memory limit), so the host refuses it at its header and
    its memory does not grow by what the sandbox streams. In a fresh interpreter, so
    that the peak RSS measured is this step's."""
    flood = (
        FORGE
        + "os.write(channel, b'%d\\n' % (1000 << 20))\n"
        + "_chunk = b'x' * (1 << 20)\n"
        + "for _ in range(300):\n"
        + "    os.write(channel, _chunk)\n"
        + "time.sleep(60)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", HOST_MEMORY_CHILD, str(tmp_path / "store"), docker_image, flood],
        capture_output=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert child.returncode == 0, child.stderr.decode()[-3000:]
    report = json.loads(child.stdout.decode().strip().splitlines()[-1])
    assert report["status"] == "error", report
    assert "1048576000-byte message" in report["error"], report
    assert report["grew_mib"] < 64, report
    assert report["after"] == "42", report


def test_a_large_namespace_still_travels_to_the_host_and_back(
    home: Path, strict: None, docker_image: str
) -> None:
    """The state's bytes are not capped by ``output_bytes``: a 40 MB value is
    checkpointed and restored into a replaced runner. (A guard for the cap above.)"""
    limits = LIMITS.model_copy(update={"timeout_s": 5, "memory": "512m"})
    with sandbox_in_run(docker_image, "large-state", limits=limits) as (sb, _):
        ok(sb.run("big = bytes(range(256)) * (40 << 12)"))
        assert sb.run("while True:\n    pass").status == "timeout"
        restored = ok(sb.run("(len(big), big[:3])"))
    assert restored.result == "(41943040, b'\\x00\\x01\\x02')"


# -- 7. a killed host leaves no container behind --------------------------------------------

BUSY_CHILD = """
import os, sys
import codetape
codetape.configure(home=sys.argv[1], otlp=False)
limits = codetape.Limits(timeout_s=600)
with codetape.run("killed-host"):
    sb = codetape.Sandbox(image=sys.argv[2], limits=limits).__enter__()
    sb.run("x = 1")
    print(os.getpid(), flush=True)
    sb.run(sys.argv[3])
"""


def _labelled(client: Any, pid: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.api.containers(
        all=True, filters={"label": f"{PID_LABEL}={pid}"}
    )
    return found


@contextmanager
def recorder(tmp_path: Path, image: str, code: str, client: Any) -> Iterator[int]:
    """A recording process that ran one step in a sandbox and now runs ``code`` in it;
    yields its pid (for the test to kill), and removes whatever it left behind."""
    child = subprocess.Popen(
        [sys.executable, "-c", BUSY_CHILD, str(tmp_path / "store"), image, code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == str(child.pid), (line, child.stderr and child.stderr.read())
        yield child.pid
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=60)
        for container in _labelled(client, child.pid):
            client.api.remove_container(container["Id"], force=True)


def kill_9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: not Path(f"/proc/{pid}/cmdline").read_bytes(), "the process died")


def test_a_host_killed_during_a_busy_step_leaves_no_container_running(
    home: Path, docker_image: str, docker_client: Any, tmp_path: Path
) -> None:
    """``kill -9`` of the recording process while its code is in ``while True: pass``
    (with a subprocess of its own): the runner sees its channel close and ends, the
    container stops, and the code's processes with it."""
    marker = f"codetape-busy-{uuid.uuid4().hex}"
    code = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)  # {marker}'])\n"
        "while True:\n"
        "    pass\n"
    )
    with recorder(tmp_path, docker_image, code, docker_client) as pid:
        eventually(lambda: host_processes_with(marker), "the busy step started")
        kill_9(pid)

        def stopped() -> bool:
            return all(c["State"] != "running" for c in _labelled(docker_client, pid))

        eventually(stopped, "the container of the killed host stopped")
        eventually(lambda: not host_processes_with(marker), "the code's process ended")


def test_the_next_sandbox_removes_the_containers_of_killed_hosts(
    home: Path, docker_image: str, docker_client: Any, tmp_path: Path
) -> None:
    """A recorder killed with its sandbox open (its step ran: it had a container): the
    next sandbox that starts on this machine removes that container."""
    with recorder(tmp_path, docker_image, "import time\ntime.sleep(600)", docker_client) as pid:
        kill_9(pid)
        with Sandbox(image=docker_image, limits=LIMITS) as sb:
            assert sb.run("1 + 1").result == "2"

        def started_again_and_gone() -> bool:
            # The container is removed when a sandbox starts: if Docker was still busy
            # with it that time (its runner exiting as the host vanished), the next
            # start removes it.
            if not _labelled(docker_client, pid):
                return True
            with Sandbox(image=docker_image, limits=LIMITS) as again:
                again.run("1")
            return not _labelled(docker_client, pid)

        eventually(started_again_and_gone, "the container removed by a sandbox start")


# -- 8. nothing the code started runs on into the next step ---------------------------------

LATE_PROCESSES = """
import os, subprocess, sys, time
late = "import os, time\\n" \\
    "while not os.path.exists('/tmp/go'):\\n" \\
    "    time.sleep(0.01)\\n" \\
    "open('/tmp/late-from-process', 'w').write('late')\\n"
p = subprocess.Popen([sys.executable, '-c', late], start_new_session=True)
_r, _w = os.pipe()
_child = os.fork()
if _child == 0:
    if os.fork() == 0:  # a daemon: a session of its own, its parent gone
        os.setsid()
        os.write(_w, b'%d' % os.getpid())
        time.sleep(600)
    os._exit(0)
os.waitpid(_child, 0)
daemon = int(os.read(_r, 32))
"""

CHECK_PROCESSES = """
import os
def _running(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False
open('/tmp/go', 'w').close()
p.wait(timeout=30)
out = {
    "late_file": os.path.exists('/tmp/late-from-process'),
    "popen_returncode": p.returncode,
    "daemon_running": _running(daemon),
    "others_running": [int(e) for e in os.listdir('/proc') if e.isdigit()
                       and int(e) not in (1, os.getpid()) and _running(int(e))],
}
"""

LATE_THREAD = """
import threading
go = threading.Event()
def _late():
    go.wait()
    open('/tmp/late-from-thread', 'w').write('late')
writer = threading.Thread(target=_late, name='late-writer', daemon=True)
writer.start()
"""

CHECK_THREAD = """
import os
go.set()
writer.join(30)
out = {"late_file": os.path.exists('/tmp/late-from-thread'), "alive": writer.is_alive()}
"""


def test_background_processes_are_killed_when_their_step_ends(
    home: Path, strict: None, docker_image: str
) -> None:
    """A ``start_new_session`` subprocess that would write a file when told to, and a
    double-forked daemon: neither runs on into the next step."""
    with sandbox_in_run(docker_image, "background-processes") as (sb, _):
        ok(sb.run(LATE_PROCESSES))
        seen = probe(sb, CHECK_PROCESSES)
    assert seen == {
        "late_file": False,
        "popen_returncode": -9,
        "daemon_running": False,
        "others_running": [],
    }


def test_a_daemon_thread_does_not_run_on_into_the_next_step(
    home: Path, strict: None, docker_image: str
) -> None:
    """A daemon thread that would write a file when told to, after its step: it is
    stopped as soon as it runs again, before it writes."""
    with sandbox_in_run(docker_image, "background-thread") as (sb, _):
        ok(sb.run(LATE_THREAD))
        seen = probe(sb, CHECK_THREAD)
    assert seen == {"late_file": False, "alive": False}


def test_keep_background_lets_them_run_on(home: Path, strict: None, docker_image: str) -> None:
    kept = LIMITS.model_copy(update={"keep_background": True})
    with sandbox_in_run(docker_image, "background-kept", limits=kept) as (sb, _):
        ok(sb.run(LATE_PROCESSES + LATE_THREAD))
        processes = probe(sb, CHECK_PROCESSES)
        thread = probe(sb, CHECK_THREAD)
        ok(sb.run("import os, signal\nos.kill(daemon, signal.SIGKILL)"))
    assert processes["late_file"] is True
    assert processes["popen_returncode"] == 0
    assert processes["daemon_running"] is True
    assert thread == {"late_file": True, "alive": False}


# -- 9. /dev/shm and the container runtime ----------------------------------------------------


def test_dev_shm_has_the_size_limits_give_it(home: Path, strict: None, docker_image: str) -> None:
    limits = LIMITS.model_copy(update={"shm": "8m"})
    with sandbox_in_run(docker_image, "shm", limits=limits) as (sb, _):
        seen = probe(
            sb,
            "import errno, os\n"
            "_st = os.statvfs('/dev/shm')\n"
            "try:\n"
            "    with open('/dev/shm/fill', 'wb') as _f:\n"
            "        _f.write(b'x' * (16 << 20))\n"
            "    full = False\n"
            "except OSError as exc:\n"
            "    full = exc.errno == errno.ENOSPC\n"
            "out = {'size': _st.f_blocks * _st.f_frsize, 'full': full}",
        )
    assert seen == {"size": 8 << 20, "full": True}


def _runc_is_vulnerable(client: Any) -> bool:
    """Whether this engine runs containers with runc older than 1.1.12."""
    if client.info().get("DefaultRuntime", "runc") != "runc":
        return False
    for component in client.version().get("Components") or []:
        if component.get("Name") == "runc":
            parts = component["Version"].split("+")[0].split("-")[0].split(".")
            return tuple(int(p) for p in parts[:3]) < (1, 1, 12)
    return False


def test_doctor_checks_the_container_runtime(
    home: Path, docker_image: str, docker_client: Any
) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    runtime = checks["container runtime"]
    if _runc_is_vulnerable(docker_client):
        assert runtime["status"] == "fail"
        assert "CVE-2024-21626" in runtime["detail"]
        assert "1.1.12" in runtime["fix"]
        assert result.exit_code == 1
    else:
        assert runtime["status"] == "ok"


WARNING_CHILD = """
import json, sys, warnings
import codetape
codetape.configure(home=sys.argv[1], otlp=False)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(2):
        with codetape.Sandbox(image=sys.argv[2]) as sb:
            assert sb.run("1").ok
print(json.dumps([[w.category.__name__, str(w.message), w.filename] for w in caught]))
"""


def test_a_sandbox_warns_once_when_the_runtime_has_a_known_escape(
    home: Path, docker_image: str, docker_client: Any, tmp_path: Path
) -> None:
    child = subprocess.run(
        [sys.executable, "-c", WARNING_CHILD, str(tmp_path / "store"), docker_image],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    caught = json.loads(child.stdout.strip().splitlines()[-1])
    runtime = [w for w in caught if w[0] == "VulnerableRuntimeWarning"]
    if not _runc_is_vulnerable(docker_client):
        assert runtime == []
        return
    assert len(runtime) == 1, caught
    assert "CVE-2024-21626" in runtime[0][1]
    assert runtime[0][2] == "<string>"  # it points at the user's line, not codetape's


# -- 10. tools hand the code real types, both ways ---------------------------------------------


@dataclass(frozen=True)
class Invoice:
    """A class of the host's, which the sandbox image does not have."""

    number: int


calls_on_host: list[tuple[str, Any]] = []


def typed_answers() -> Any:
    calls_on_host.append(("typed_answers", None))
    return {
        "when": datetime.datetime(2024, 5, 17, 9, 30, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2024, 5, 17),
        "price": decimal.Decimal("12.50"),
        "raw": b"\x00\xff",
        "pair": ("ACME", 2),
        "tags": {"red"},
        "by_id": {1: "one"},
    }


def describe(*args: Any, **kwargs: Any) -> str:
    calls_on_host.append(("describe", (args, kwargs)))
    return repr((args, kwargs))


def invoice() -> Invoice:
    return Invoice(7)


def test_a_tools_result_reaches_the_code_as_the_type_the_tool_returned(
    home: Path, strict: None, docker_image: str
) -> None:
    with sandbox_in_run(docker_image, "typed-results", tools=[typed_answers]) as (sb, _):
        seen = probe(
            sb,
            "r = typed_answers()\n"
            "out = {k: type(v).__name__ for k, v in r.items()}\n"
            "out['sum'] = str(r['price'] * 2)\n"
            "out['year'] = r['when'].year\n"
            "out['tz'] = str(r['when'].tzinfo)\n"
            "out['key'] = type(next(iter(r['by_id']))).__name__",
        )
    assert seen == {
        "when": "datetime",
        "day": "date",
        "price": "Decimal",
        "raw": "bytes",
        "pair": "tuple",
        "tags": "set",
        "by_id": "dict",
        "sum": "25.00",
        "year": 2024,
        "tz": "UTC",
        "key": "int",
    }


def test_a_tools_arguments_reach_the_host_as_the_types_the_code_passed(
    home: Path, strict: None, docker_image: str
) -> None:
    calls_on_host.clear()
    expected = (
        (
            datetime.datetime(2024, 5, 17, 9, 30),
            datetime.date(2024, 5, 17),
            decimal.Decimal("0.10"),
            b"\xff",
            ("a", 1),
            {3},
        ),
        {"mapping": {2: frozenset({"x"})}},
    )
    with sandbox_in_run(docker_image, "typed-arguments", tools=[describe]) as (sb, _):
        ok(
            sb.run(
                "import datetime, decimal\n"
                "describe(datetime.datetime(2024, 5, 17, 9, 30), datetime.date(2024, 5, 17),\n"
                "         decimal.Decimal('0.10'), b'\\xff', ('a', 1), {3},\n"
                "         mapping={2: frozenset({'x'})})"
            )
        )
    assert calls_on_host == [("describe", expected)]


def test_a_result_of_a_class_the_image_lacks_fails_with_a_clear_message(
    home: Path, strict: None, docker_image: str
) -> None:
    with sandbox_in_run(docker_image, "missing-class", tools=[invoice]) as (sb, _):
        failed = sb.run("invoice()")
        caught = ok(sb.run("try:\n    invoice()\nexcept ImportError:\n    'caught'\n'caught'"))
    assert failed.status == "error"
    assert failed.error is not None
    assert failed.error.type == "ImportError"
    assert "the result of tool 'invoice'" in failed.error.message
    assert f"{__name__}.Invoice" in failed.error.message
    assert "cannot be loaded in this sandbox" in failed.error.message
    assert caught.result == "'caught'"


def test_typed_tool_answers_are_recorded_as_before_and_replay_as_the_live_step_saw_them(
    home: Path, strict: None, docker_image: str
) -> None:
    """The recording keeps a tool call's JSON preview and digest (a datetime shown as
    its repr, as before), plus the answer pickled: a replay hands the code the same
    types, and calls no host tool."""
    code = textwrap.dedent(
        """
        r = typed_answers()
        print(type(r['when']).__name__, r['when'].year, r['price'] * 2, r['pair'], r['raw'])
        """
    )
    with sandbox_in_run(docker_image, "typed-replay", tools=[typed_answers]) as (sb, run):
        live = ok(sb.run(code))
    assert live.stdout == "datetime 2024 25.00 ('ACME', 2) b'\\x00\\xff'\n"
    call = codetape.Store(home).step(run.id, 0).tool_calls[0]
    assert call.result["when"] == (
        "datetime.datetime(2024, 5, 17, 9, 30, tzinfo=datetime.timezone.utc)"
    )
    assert call.result["pair"] == ["ACME", 2]
    calls_on_host.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = codetape.replay(run.id, 0, home=home)
    assert report.verdict == "reproduced", report
    assert calls_on_host == []
    assert report.replay_run_id is not None
    replayed = codetape.Store(home).step(report.replay_run_id, 0)
    assert replayed.stdout == live.stdout
