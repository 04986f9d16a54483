"""The Docker sandbox's security policy (DESIGN.md, "Security policy for the sandbox"),
checked from inside a real container: hostile code actions run and the boundary holds.

Every test here needs a running Docker engine and the offline sandbox image
(``$CODETAPE_IMAGE`` or ``codetape/python:bookworm``): it skips without them, and fails
under ``CI=true``. Limits are small so that each bomb ends in seconds.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import re
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import codetape
from codetape import Limits, Sandbox, StepResult
from codetape.tracer.internal import RunRecorder

from . import sandbox_fixtures as fx
from .sandbox_fixtures import (
    container_gone,
    containers_of_run,
    host_pids_in_container,
    host_process_count,
    host_processes_with,
)

# Fixtures shared with test_sandbox_contract.py.
_docker_session = fx._docker_session
docker_api = fx.docker_api
docker_image = fx.docker_image

pytestmark = pytest.mark.docker

LIMITS = Limits(timeout_s=3, memory="128m", pids=32, tmpfs="8m", output_bytes=10_000)
# A functional bound on the kill (docker kill + container removal), not a speed claim.
KILL_GRACE_S = 15.0
# Slack for unrelated processes that come and go on this machine while a test runs
# (other test sessions may share the engine): the exact checks use the container's cgroup.
HOST_SLACK = 48


@contextmanager
def sandbox_in_run(image: str, name: str) -> Iterator[tuple[Sandbox, RunRecorder]]:
    """A run with a warm sandbox inside it, so its containers carry this run's id."""
    with codetape.run(name) as run, Sandbox(image=image, limits=LIMITS) as sb:
        yield sb, run


def only_container(client: Any, run: RunRecorder) -> Any:
    found = containers_of_run(client, run.id, running_only=True)
    assert len(found) == 1, f"expected one running sandbox container for the run, got {found}"
    return found[0]


def probe(sb: Sandbox, code: str) -> Any:
    """Run ``code`` (which sets ``out``) and return ``out`` as JSON, read from stdout:
    result previews are shortened, the printed JSON is whole."""
    result = sb.run(code + "\nimport json as _json\nprint(_json.dumps(out))")
    assert result.status == "ok", (result.status, result.error)
    return json.loads(result.stdout)


def value(result: StepResult) -> str:
    """The result preview of a step that must have succeeded."""
    assert result.status == "ok", (result.status, result.error)
    assert result.result is not None, "the step has no result"
    return result.result


# -- network -----------------------------------------------------------------------------

PROBE = """
try:
{body}
except OSError as exc:
    print("blocked:", type(exc).__name__, exc)
else:
    print("REACHED THE NETWORK")
"""

EGRESS = {
    "http_to_public_ip": (
        "    import urllib.request\n"
        "    urllib.request.urlopen('http://1.1.1.1/', timeout=2).read(10)"
    ),
    "tcp_connect": (
        "    import socket\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "    s.settimeout(2)\n"
        "    s.connect(('8.8.8.8', 53))"
    ),
    "udp_send": (
        "    import socket\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    s.sendto(b'\\x00' * 12, ('9.9.9.9', 53))"
    ),
    "ipv6_connect": (
        "    import socket\n"
        "    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)\n"
        "    s.settimeout(2)\n"
        "    s.connect(('2606:4700:4700::1111', 443))"
    ),
    "raw_icmp_socket": (
        "    import socket\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
        "    s.sendto(b'\\x08\\x00\\xf7\\xff\\x00\\x00\\x00\\x00', ('1.1.1.1', 0))"
    ),
    "dns_resolution": ("    import socket\n    socket.getaddrinfo('example.com', 443)"),
}


@pytest.mark.parametrize("route", sorted(EGRESS))
def test_network_egress_fails_inside(
    home: Path, strict: None, docker_image: str, route: str
) -> None:
    with sandbox_in_run(docker_image, f"egress-{route}") as (sb, _):
        result = sb.run(PROBE.format(body=EGRESS[route]))
    assert result.status == "ok", (result.status, result.error)
    assert "REACHED THE NETWORK" not in result.stdout
    assert result.stdout.startswith("blocked: "), result.stdout


# -- processes ---------------------------------------------------------------------------

FORK_BOMB = "import os\nwhile True:\n    os.fork()\n"


def _host_can_fork() -> bool:
    done = subprocess.run(
        [sys.executable, "-c", "print(6 * 7)"], capture_output=True, timeout=30, check=False
    )
    return done.stdout == b"42\n"


def test_fork_bomb_hits_the_pids_limit_and_leaves_the_host_alone(
    home: Path, strict: None, docker_image: str, docker_api: Any
) -> None:
    before = host_process_count()
    with sandbox_in_run(docker_image, "fork-bomb") as (sb, run):
        assert sb.run("x = 41").ok
        container = only_container(docker_api, run)
        bomb = sb.run(FORK_BOMB)
        in_container = host_pids_in_container(container.id)
        during = host_process_count()
        assert _host_can_fork(), "the host could not start a process after the fork bomb"
        after_bomb = sb.run("x + 1")
    after = host_process_count()

    assert bomb.status in ("error", "timeout"), (bomb.status, bomb.error)
    if bomb.status == "error":  # fork() failed: EAGAIN from the pids cgroup
        assert bomb.error is not None
        assert bomb.error.type == "BlockingIOError", bomb.error
        assert os.strerror(errno.EAGAIN) in bomb.error.message
    # The bomb stayed inside the container's pids limit (threads count too) ...
    assert len(in_container) <= LIMITS.pids, in_container
    assert during - before <= LIMITS.pids + HOST_SLACK, (before, during)
    # ... and nothing of it is left on the host once the sandbox is closed.
    assert host_pids_in_container(container.id) == []
    assert after - before <= HOST_SLACK, (before, after)
    assert value(after_bomb) == "42"


def test_after_a_fork_bomb_the_sandbox_can_still_start_a_process(
    home: Path, strict: None, docker_image: str
) -> None:
    """The bomb's processes must not hold the pids limit for the rest of the session."""
    with sandbox_in_run(docker_image, "fork-bomb-aftermath") as (sb, _):
        sb.run(FORK_BOMB)
        time.sleep(1)
        nxt = sb.run(
            "import subprocess, sys\n"
            "subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True,"
            " timeout=2).stdout.decode()"
        )
    assert nxt.status == "ok", nxt.error
    assert nxt.result == repr("42\n")


def test_a_forked_child_that_leaves_the_code_action_exits_at_once(
    home: Path, strict: None, docker_image: str
) -> None:
    """A child forked by the code must end when it falls off the end of the code: it
    must never go on to run the runner's own reply path for the parent."""
    with sandbox_in_run(docker_image, "fork-child") as (sb, _):
        assert sb.run(
            "import os, time\nchild = os.fork()\nwho = 'child' if child == 0 else 'parent'"
        ).ok
        reaped = sb.run(
            "deadline = time.monotonic() + 2.0\n"
            "while True:\n"
            "    try:\n"
            "        pid, status = os.waitpid(child, os.WNOHANG)\n"
            "    except ChildProcessError:  # reaped by the sandbox: it has exited\n"
            "        pid = child\n"
            "    if pid or time.monotonic() > deadline:\n"
            "        break\n"
            "    time.sleep(0.05)\n"
            "pid == child"
        )
    assert value(reaped) == "True", "the forked child was still running 2 s after its step"


def test_memory_bomb_ends_as_oom_and_the_next_step_has_the_last_good_state(
    home: Path, strict: None, docker_image: str
) -> None:
    with sandbox_in_run(docker_image, "memory-bomb") as (sb, run):
        assert sb.run("x = 41\ndef f():\n    return x + 1").ok
        bomb = sb.run("lost = 1\nhog = []\nwhile True:\n    hog.append(b'x' * (1 << 20))")
        nxt = sb.run("(f(), 'lost' in globals(), 'hog' in globals())")
    assert bomb.status == "oom", (bomb.status, bomb.error)
    assert bomb.error is not None
    assert value(nxt) == "(42, False, False)"
    recorded = codetape.Store(home).step(run.id, 1)
    assert recorded.status == "oom"
    assert recorded.error is not None


@pytest.mark.parametrize("spin", ["while True:\n    pass", "10**10**8"], ids=["loop", "bigpow"])
def test_runaway_code_times_out_and_its_container_is_gone(
    home: Path, strict: None, docker_image: str, docker_api: Any, spin: str
) -> None:
    with sandbox_in_run(docker_image, "timeout") as (sb, run):
        assert sb.run("x = 41\ndef f():\n    return x + 1").ok
        old = only_container(docker_api, run)
        started = time.monotonic()
        stuck = sb.run("lost = 1\n" + spin)
        elapsed = time.monotonic() - started
        still_running = containers_of_run(docker_api, run.id, running_only=True)
        old_gone = container_gone(docker_api, old.id)
        nxt = sb.run("(f(), 'lost' in globals())")

    assert stuck.status == "timeout", (stuck.status, stuck.error)
    assert stuck.error is not None
    assert elapsed < LIMITS.timeout_s + KILL_GRACE_S, elapsed
    assert elapsed >= LIMITS.timeout_s * 0.9, f"stopped before its limit: {elapsed:.2f}s"
    assert old_gone, "the timed-out container still exists"
    assert old.id not in [c.id for c in still_running]
    assert host_pids_in_container(old.id) == [], "processes of the killed container remain"
    assert value(nxt) == "(42, False)"


# -- filesystem --------------------------------------------------------------------------


def test_tmp_is_capped_at_its_size(home: Path, strict: None, docker_image: str) -> None:
    with sandbox_in_run(docker_image, "tmpfs") as (sb, _):
        name, written = probe(
            sb,
            "import errno, os\n"
            "written = 0\n"
            "try:\n"
            "    with open('/tmp/fill', 'wb') as fh:\n"
            "        while True:\n"
            "            fh.write(b'\\x01' * 65536)\n"
            "            fh.flush()\n"
            "            written += 65536\n"
            "except OSError as exc:\n"
            "    code = exc.errno\n"
            "os.remove('/tmp/fill')\n"
            "out = (errno.errorcode[code], written)",
        )
        after = sb.run("open('/tmp/small', 'w').write('still usable')")
    assert name == "ENOSPC"
    assert 0 < written <= 8 * 2**20, written
    assert value(after) == "12"


def test_root_filesystem_is_read_only(home: Path, strict: None, docker_image: str) -> None:
    with sandbox_in_run(docker_image, "rootfs") as (sb, _):
        codes, options = probe(
            sb,
            "import errno\n"
            "codes = {}\n"
            "for path in ('/probe', '/var/tmp/probe', '/usr/lib/probe', '/etc/probe'):\n"
            "    try:\n"
            "        open(path, 'w').close()\n"
            "        codes[path] = 'WRITTEN'\n"
            "    except OSError as exc:\n"
            "        codes[path] = errno.errorcode[exc.errno]\n"
            "root = [l.split() for l in open('/proc/mounts') if l.split()[1] == '/']\n"
            "out = (codes, root[-1][3].split(','))",
        )
    # /var/tmp is world-writable, so only a read-only mount can refuse it.
    assert codes["/var/tmp/probe"] == "EROFS", codes
    assert "WRITTEN" not in codes.values(), codes
    assert "ro" in options, options


# -- output --------------------------------------------------------------------------------


_DROPPED = re.compile(r"(\d+)[^\d\n]*bytes[^\d\n]*dropped", re.IGNORECASE)


def _kept_and_dropped(text: str, full: str) -> tuple[int, int]:
    """How much of ``full`` (one repeated character plus newlines) the capped ``text``
    kept, and the dropped count its marker states."""
    kept = 0
    while kept < min(len(text), len(full)) and text[kept] == full[kept]:
        kept += 1
    rest = text[kept:]
    marker = _DROPPED.search(rest)
    assert marker is not None, f"no 'N bytes dropped' marker after the kept output: {rest!r}"
    leftover = rest[: marker.start()] + rest[marker.end() :]
    assert full[0] not in leftover, f"output beyond the kept part: {rest[:200]!r}"
    return kept, int(marker.group(1))


def test_output_flood_is_capped_with_a_count_of_dropped_bytes(
    home: Path, strict: None, docker_image: str
) -> None:
    line = "z" * 48  # 49 bytes with print's newline: the cap falls inside a line
    lines, err_bytes = 20_000, 30_000
    with sandbox_in_run(docker_image, "flood") as (sb, run):
        flood = sb.run(
            "import sys\n"
            f"for _ in range({lines}):\n"
            f"    print({line!r})\n"
            f"sys.stderr.write('y' * {err_bytes})\n"
            "'done'"
        )
        quiet = sb.run("print('next')")
    assert flood.status == "ok", flood.error
    assert flood.result == "'done'"
    assert (quiet.stdout, quiet.stderr) == ("next\n", ""), "the cap carried over to the next step"
    full_out = (line + "\n") * lines
    kept, dropped = _kept_and_dropped(flood.stdout, full_out)
    assert 0 < kept <= LIMITS.output_bytes
    assert dropped == len(full_out) - kept
    kept_err, dropped_err = _kept_and_dropped(flood.stderr, "y" * err_bytes)
    assert 0 < kept_err <= LIMITS.output_bytes
    assert dropped_err == err_bytes - kept_err
    recorded = codetape.Store(home).step(run.id, 0)
    assert len(recorded.stdout) < LIMITS.output_bytes + 200


# -- environment, identity, privileges -----------------------------------------------------


def test_no_host_environment_variable_reaches_the_sandbox(
    home: Path, strict: None, docker_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("CODETAPE_TEST_CANARY", canary)
    with sandbox_in_run(docker_image, "env") as (sb, _):
        names = probe(sb, "import os\nout = sorted(os.environ)")
        raw = probe(sb, "out = open('/proc/self/environ', 'rb').read().decode('latin-1')")
    assert "CODETAPE_TEST_CANARY" not in names
    assert "CODETAPE_HOME" not in names  # set on the host by the home fixture
    assert "CODETAPE_STRICT" not in names  # set on the host by the strict fixture
    assert canary not in raw


def test_code_runs_unprivileged_without_capabilities(
    home: Path, strict: None, docker_image: str
) -> None:
    with sandbox_in_run(docker_image, "privileges") as (sb, _):
        fields = probe(
            sb,
            "fields = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
            "out = {k: fields[k].split() for k in ('Uid', 'Gid', 'CapEff', 'CapPrm', 'CapBnd',"
            " 'CapAmb', 'NoNewPrivs')}",
        )
        setuid = sb.run(
            "import os\ntry:\n    os.setuid(0)\n    outcome = 'BECAME ROOT'\n"
            "except OSError as exc:\n    outcome = type(exc).__name__\noutcome"
        )
    assert set(fields["Uid"]) == {"65534"}, fields["Uid"]
    assert set(fields["Gid"]) == {"65534"}, fields["Gid"]
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(fields[cap][0], 16) == 0, (cap, fields[cap])
    assert fields["NoNewPrivs"] == ["1"]
    assert value(setuid) == "'PermissionError'"


def test_container_is_started_with_the_hardening_flags(
    home: Path, strict: None, docker_image: str, docker_api: Any
) -> None:
    with sandbox_in_run(docker_image, "config") as (sb, run):
        sb.run("1")
        container = only_container(docker_api, run)
        container.reload()
        attrs = container.attrs
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["Privileged"] is False
    assert [c.upper() for c in host["CapDrop"] or []] in (["ALL"], ["CAP_ALL"])
    assert not host.get("CapAdd")
    assert any(o.startswith("no-new-privileges") for o in host["SecurityOpt"] or [])
    assert host["PidsLimit"] == LIMITS.pids
    assert host["Memory"] == 128 * 2**20
    assert host["NanoCpus"] == int(LIMITS.cpus * 1e9)
    assert "/tmp" in (host.get("Tmpfs") or {})
    assert not host.get("Binds")
    assert attrs["Mounts"] == [] or all(m.get("Destination") == "/tmp" for m in attrs["Mounts"])
    assert attrs["Config"]["User"] == "65534:65534"


def test_the_docker_socket_is_not_reachable(home: Path, strict: None, docker_image: str) -> None:
    with sandbox_in_run(docker_image, "docker-socket") as (sb, _):
        exists, outcomes = probe(
            sb,
            "import os, socket\n"
            "paths = ('/var/run/docker.sock', '/run/docker.sock')\n"
            "exists = [p for p in paths if os.path.exists(p)]\n"
            "outcomes = []\n"
            "for p in paths:\n"
            "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "    try:\n"
            "        s.connect(p)\n"
            "        outcomes.append('CONNECTED')\n"
            "    except OSError as exc:\n"
            "        outcomes.append(type(exc).__name__)\n"
            "out = (exists, outcomes)",
        )
    assert exists == []
    assert "CONNECTED" not in outcomes
    assert len(outcomes) == 2


def test_background_processes_do_not_outlive_the_sandbox(
    home: Path, strict: None, docker_image: str, docker_api: Any
) -> None:
    marker = f"codetape-sleeper-{uuid.uuid4().hex}"
    with codetape.run("background") as run:
        # Kept past their step (by default they are stopped when it ends): closing the
        # sandbox must end them all the same.
        kept = LIMITS.model_copy(update={"keep_background": True})
        sb = Sandbox(image=docker_image, limits=kept)
        try:
            started = sb.run(
                "import os, subprocess, sys, time\n"
                "sleeper = subprocess.Popen([sys.executable, '-c',"
                f" 'import time; time.sleep(600)  # {marker}'])\n"
                "child = os.fork()\n"
                "if child == 0:\n"
                "    time.sleep(600)\n"
                "    os._exit(0)\n"
                "(sleeper.pid, child)"
            )
            assert started.status == "ok", started.error
            container = only_container(docker_api, run)
            inside = host_pids_in_container(container.id)
            # runner + sleeper + forked child, all visible from the host while alive
            assert len(inside) >= 3, inside
            assert host_processes_with(marker), "the sleeper should be running now"
        finally:
            sb.close()
    assert container_gone(docker_api, container.id), "the container outlived sb.close()"
    assert containers_of_run(docker_api, run.id) == []
    deadline = time.monotonic() + 5
    while (host_processes_with(marker) or host_pids_in_container(container.id)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert host_processes_with(marker) == [], "the sleeper outlived the sandbox"
    assert host_pids_in_container(container.id) == []
    assert not [p for p in inside if Path(f"/proc/{p}").exists()], "a sandbox process lives on"


# -- labels and records ------------------------------------------------------------------


def test_containers_carry_the_run_id_label(
    home: Path, strict: None, docker_image: str, docker_api: Any
) -> None:
    with sandbox_in_run(docker_image, "labels") as (sb, run):
        assert sb.run("1").ok
        sb.run("while True:\n    pass")  # the replacement container is labelled too
        assert sb.run("2").ok
        container = only_container(docker_api, run)
    assert container.labels["codetape.sandbox.run_id"] == run.id
    assert "codetape.sandbox" in container.labels


def test_recorded_steps_carry_status_and_sandbox_spec(
    home: Path, strict: None, docker_image: str, docker_api: Any
) -> None:
    with sandbox_in_run(docker_image, "records") as (sb, run):
        version = value(sb.run("import platform\nplatform.python_version()")).strip("'")
        assert sb.run("while True:\n    pass").status == "timeout"
        assert sb.run("hog = []\nwhile True:\n    hog.append(b'x' * (1 << 20))").status == "oom"
    image_id = docker_api.images.get(docker_image).id
    store = codetape.Store(home)
    statuses = {}
    for index in range(3):
        step = store.step(run.id, index)
        statuses[index] = step.status
        spec = step.sandbox
        assert spec.backend == "docker"
        assert spec.image == docker_image
        assert spec.image_id == image_id
        assert spec.image_id is not None
        assert spec.image_id.startswith("sha256:")
        assert spec.layers_digest is not None
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", spec.layers_digest)
        assert spec.python == version
        assert spec.limits == LIMITS.model_dump()
    assert statuses == {0: "ok", 1: "timeout", 2: "oom"}
    timed_out = store.step(run.id, 1)
    assert timed_out.error is not None
    assert timed_out.error.type == "TimeoutError"
    assert store.run(run.id).failed_steps == 2


def test_a_replaced_or_closed_runner_leaves_no_open_pipes(
    home: Path, strict: None, docker_image: str
) -> None:
    """Replacing a timed-out runner and closing the sandbox release the runner's
    stdin/stdout/stderr pipes: a long-lived agent must not leak three fds per timeout."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with sandbox_in_run(docker_image, "pipes") as (sb, _):
            assert sb.run("while True:\n    pass").status == "timeout"
            assert sb.run("1").ok
        del sb
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == [], leaked


# -- the host end of the channel -----------------------------------------------------------

# Hostile code shares the runner's process, so it can reach the runner's channel to the
# host: the write-only pipe that is neither its own stdout nor stderr.
FIND_CHANNEL = """
import fcntl, os, stat
_own = {os.fstat(1).st_ino, os.fstat(2).st_ino}
channel = None
for _fd in range(3, 64):
    try:
        _st = os.fstat(_fd)
        _flags = fcntl.fcntl(_fd, fcntl.F_GETFL)
    except OSError:
        continue
    if (stat.S_ISFIFO(_st.st_mode) and _flags & os.O_ACCMODE == os.O_WRONLY
            and _st.st_ino not in _own):
        channel = _fd
assert channel is not None, "no channel fd found"
"""

_HOST_FLOOD_CHILD = """
import json, resource, sys, time
import codetape
codetape.configure(home=sys.argv[1], otlp=False)
limits = codetape.Limits(timeout_s=3, memory="128m", pids=32, tmpfs="8m", output_bytes=10_000)
flood = sys.argv[3]
with codetape.run("channel-flood"), codetape.Sandbox(image=sys.argv[2], limits=limits) as sb:
    assert sb.run("1").ok
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    flooded = sb.run(flood)
    elapsed = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    after = sb.run("6 * 7")
print(json.dumps({"grew_kib": peak - before, "elapsed_s": elapsed, "status": flooded.status,
                  "after": after.result}))
"""


def test_code_flooding_the_channel_neither_bloats_nor_stalls_the_host(
    home: Path, docker_image: str, tmp_path: Path
) -> None:
    """Code that writes a frame header claiming a huge body to the channel and then
    streams 600 MB: the host must not buffer what the sandbox streams (no more than the
    sandbox's own 128 MB limit), and the step must still end within its timeout plus
    the kill grace. Run in a fresh interpreter so that its peak RSS is this step's."""
    streamed_mib = 600
    flood = (
        FIND_CHANNEL
        + "os.write(channel, b'999999999999\\n')\n"
        + "_chunk = b'x' * (1 << 20)\n"
        + f"for _ in range({streamed_mib}):\n"
        + "    os.write(channel, _chunk)\n"
        + "import time\ntime.sleep(60)\n"
    )
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _HOST_FLOOD_CHILD,
            str(tmp_path / "child-store"),
            docker_image,
            flood,
        ],
        capture_output=True,
        timeout=180,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert child.returncode == 0, child.stderr.decode()[-3000:]
    report = json.loads(child.stdout.decode().strip().splitlines()[-1])
    problems = []
    if report["status"] == "ok":
        problems.append("the flooded step reported ok")
    if report["after"] != "42":
        problems.append("the next step did not compute 6 * 7")
    if report["grew_kib"] / 1024 >= 128:
        problems.append(f"the host buffered {report['grew_kib'] / 1024:.0f} MiB of the stream")
    if report["elapsed_s"] >= 3 + KILL_GRACE_S:
        problems.append(f"the step took {report['elapsed_s']:.1f}s to stop (limit 3s)")
    assert problems == [], report


def test_a_forged_reply_does_not_shift_the_results_of_later_steps(
    home: Path, strict: None, docker_image: str
) -> None:
    """Code that writes a reply frame of its own on the channel may garble its own step,
    but the runner's real reply must not be taken as the answer to the next step."""
    forged = (
        b'{"op":"result","status":"ok","has_result":false,"stdout":"forged","stderr":"","state":{}}'
    )
    with sandbox_in_run(docker_image, "forged-reply") as (sb, _):
        sb.run(
            FIND_CHANNEL
            + f"_body = {forged!r}\n"
            + "os.write(channel, b'%d\\n' % len(_body) + _body)\n"
            + "import time\ntime.sleep(0.5)\n"
            + "print('real')\n"
        )
        time.sleep(0.5)
        nxt = sb.run("print('next')\n6 * 7")
        last = sb.run("'last'")
    assert (nxt.status, nxt.result, nxt.stdout) == ("ok", "42", "next\n")
    assert (last.status, last.result) == ("ok", "'last'")
