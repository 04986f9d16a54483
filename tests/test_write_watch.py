"""Large buffers no step touches are checked by the kernel's write tracking, and every
write to them is still caught: Python code, a memoryview, numpy, ctypes, another
thread, the kernel writing into them (``recv_into``, ``readinto``), the agent's loop
between steps, a smolagents agent's loop between runs.

Where the kernel cannot watch writes (not Linux 6.7+, userfaultfd not permitted), the
checks compare copies; the recording tests run both ways.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import codetape
from codetape.tracer import _changes, _writes

from .conftest import require
from .replay_corpus import ScriptedModel

MB = 1 << 20


@pytest.fixture
def kernel_watch() -> _writes.WriteWatcher:
    watcher = _writes.watcher()
    require(
        watcher is not None,
        "the kernel's write tracking",
        "Linux 6.7 or later with userfaultfd permitted (root, or vm.unprivileged_userfaultfd=1)",
    )
    assert watcher is not None
    return watcher


@pytest.fixture(params=["kernel", "copies"])
def watching(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Record with the kernel watching writes, then again with copies compared."""
    if request.param == "kernel":
        request.getfixturevalue("kernel_watch")
    else:
        monkeypatch.setattr(_writes, "_watcher", None)
        monkeypatch.setattr(_writes, "_opened", True)
    return str(request.param)


def _recv_into(value: Any) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"\x01\x02\x03")
        b.recv_into(memoryview(value)[MB : MB + 3])


def _readinto(value: Any, tmp: Path) -> None:
    path = tmp / "chunk"
    path.write_bytes(b"\xff" * 10_000)
    with path.open("rb", buffering=0) as f:
        f.readinto(memoryview(value)[2 * MB : 2 * MB + 10_000])


def _from_thread(change: Callable[[], None]) -> None:
    thread = threading.Thread(target=change)
    thread.start()
    thread.join()


def _grow_and_shrink(value: Any) -> None:
    """One item more, then the first one less: the same length, other contents."""
    value.append(1)
    del value[0]


def _memmove(value: bytearray) -> None:
    target = (ctypes.c_char * len(value)).from_buffer(value)
    ctypes.memmove(ctypes.addressof(target) + 3 * MB, b"zz", 2)
    del target


BUFFER_CHANGES: dict[str, Callable[[bytearray, Path], Any]] = {
    "item": lambda v, t: v.__setitem__(5 * MB, v[5 * MB] ^ 1),
    "memoryview": lambda v, t: memoryview(v).__setitem__(7 * MB, v[7 * MB] ^ 1),
    "numpy": lambda v, t: np.frombuffer(v, dtype=np.uint8).__setitem__(6 * MB, v[6 * MB] ^ 1),
    "ctypes": lambda v, t: _memmove(v),
    "thread": lambda v, t: _from_thread(lambda: v.__setitem__(4 * MB, v[4 * MB] ^ 1)),
    "recv_into": lambda v, t: _recv_into(v),
    "readinto": _readinto,
    "first byte": lambda v, t: v.__setitem__(0, v[0] ^ 1),
    "last byte": lambda v, t: v.__setitem__(-1, v[-1] ^ 1),
    "same length again": lambda v, t: _grow_and_shrink(v),
}


def _buffer() -> bytearray:
    return bytearray(os.urandom(1 << 16) * 160)  # 10 MB


@pytest.mark.parametrize("change", BUFFER_CHANGES, ids=list(BUFFER_CHANGES))
def test_every_write_to_a_watched_bytearray_is_caught(
    kernel_watch: _writes.WriteWatcher, change: str, tmp_path: Path
) -> None:
    value = _buffer()
    check = _changes.probe(value)
    assert check is not None
    assert check(value)
    BUFFER_CHANGES[change](value, tmp_path)
    assert not check(value)


LIST_CHANGES: dict[str, Callable[[list[Any]], Any]] = {
    "item": lambda v: v.__setitem__(600_000, -1),
    "an equal value of another type": lambda v: v.__setitem__(300_007, 300_007.0),
    "same length again": lambda v: _grow_and_shrink(v),
    "sort": lambda v: v.sort(reverse=True),
    "thread": lambda v: _from_thread(lambda: v.__setitem__(500_001, "x")),
    "last": lambda v: v.__setitem__(-1, None),
}


@pytest.mark.parametrize("change", LIST_CHANGES, ids=list(LIST_CHANGES))
def test_every_change_to_a_watched_list_is_caught(
    kernel_watch: _writes.WriteWatcher, change: str
) -> None:
    value = list(range(1_000_000))  # 8 MB of references
    check = _changes.probe(value)
    assert check is not None
    assert check(value)
    LIST_CHANGES[change](value)
    assert not check(value)


def test_reading_a_watched_buffer_is_not_a_change(kernel_watch: _writes.WriteWatcher) -> None:
    value, numbers = _buffer(), list(range(1_000_000))
    checks = [_changes.probe(value), _changes.probe(numbers)]
    bytes(value), pickle.dumps(value), sum(numbers), np.frombuffer(value, dtype=np.uint8).sum()
    assert all(
        check is not None and check(v) for check, v in zip(checks, [value, numbers], strict=True)
    )


def test_two_checks_of_one_buffer_never_hide_a_write_from_each_other(
    kernel_watch: _writes.WriteWatcher,
) -> None:
    """Two names bound to one buffer: when one is described again (its range
    protected anew), the other's check still says the buffer changed."""
    value = _buffer()
    first, second = _changes.probe(value), _changes.probe(value)
    assert first is not None
    assert second is not None
    value[MB] ^= 1
    assert not first(value)
    again = _changes.probe(value)  # the first name, described again
    assert again is not None
    assert again(value)
    assert not second(value)


def test_a_watch_freed_while_its_thread_is_inside_the_watcher_does_not_hang(
    kernel_watch: _writes.WriteWatcher,
) -> None:
    """The garbage collector can free a check caught in a reference cycle while this
    thread is inside the watcher (making the next watch, under its lock): freeing it
    there must not wait on that lock. Then its range is released by the next call."""
    made: list[tuple[int, int]] = []

    def free_inside() -> None:
        before = set(kernel_watch._ranges)
        check = _changes.probe(bytearray(2 * MB))
        assert check is not None
        made.extend(set(kernel_watch._ranges) - before)
        with kernel_watch._lock:  # where a collection inside watch() would run
            del check

    worker = threading.Thread(target=free_inside, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the watcher waited on its own lock"
    assert len(made) == 1
    other = _changes.probe(_buffer())
    assert other is not None
    assert made[0] not in kernel_watch._ranges, "the freed watch's range was released"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_trust_the_parents_watch(
    kernel_watch: _writes.WriteWatcher,
) -> None:
    value = _buffer()
    check = _changes.probe(value)
    assert check is not None
    assert check(value)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the kernel no longer tracks the range for it
        os.write(write, b"1" if check(value) else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"0"
    os.close(read)
    os.close(write)
    assert check(value), "the parent's watch is untouched by the child"


# -- recorded through the public API ---------------------------------------------------


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> Any:
    exec(code, namespace)
    return namespace.get("result")


def test_a_large_buffer_the_host_changes_between_steps_is_recorded(
    home: Path, watching: str
) -> None:
    ns: dict[str, Any] = {"blob": _buffer(), "rows": list(range(1_000_000))}
    with codetape.run("bot") as r:
        execute("n = 1", ns)
        view = memoryview(ns["blob"])
        view[MB] = ord("A")  # the agent's loop, through a memoryview it keeps
        execute("m = 2", ns)
        ns["rows"][10] = "ten"
        execute("k = 3", ns)
        execute("j = 4", ns)
        del view
    steps = codetape.Store(home).steps(r.id)
    digests = [s.variables_before["blob"].digest for s in steps]
    assert digests[0] != digests[1], "the write through the memoryview was recorded"
    assert digests[1] == digests[2] == digests[3]
    rows = [s.variables_before["rows"].digest for s in steps]
    assert rows[0] == rows[1] != rows[2] == rows[3]
    assert "'ten'" in steps[2].variables_before["rows"].preview


def test_a_smolagents_agent_changed_between_runs_records_the_change(
    home: Path, watching: str
) -> None:
    """The agent's variables outlive its runs; the host changes a 10 MB buffer in the
    executor's state between two runs, in place, and the second run's first step sees
    the change."""
    from smolagents import CodeAgent

    from codetape.integrations.smolagents import instrument

    steps = ("total = len(blob)", "final_answer(total)")
    agent = instrument(CodeAgent(tools=[], model=ScriptedModel(steps), verbosity_level=-1))
    agent.python_executor.send_variables({"blob": _buffer()})
    agent.run("measure", reset=False)
    np.frombuffer(agent.python_executor.state["blob"], dtype=np.uint8)[5 * MB] ^= 0xFF
    agent.model.script = list(steps)
    agent.run("measure again", reset=False)
    store = codetape.Store(home)
    first, second = (store.steps(run.id) for run in reversed(store.runs(limit=2)))
    before = second[0].variables_before["blob"].digest
    assert before != first[-1].variables_after["blob"].digest
    assert before == second[-1].variables_after["blob"].digest


def test_write_tracking_can_be_turned_off(kernel_watch: _writes.WriteWatcher) -> None:
    """``CODETAPE_WRITE_WATCH=0``: nothing is registered with the kernel, and the checks
    of large values compare copies (and still catch every change)."""
    probe_code = (
        "from codetape.tracer import _changes, _writes\n"
        "value = bytearray(4 << 20)\n"
        "check = _changes.probe(value)\n"
        "value[2 << 20] = 1\n"
        "print(_writes.watcher() is None, check(value))\n"
    )
    env = {**os.environ, "CODETAPE_WRITE_WATCH": "0"}
    done = subprocess.run(
        [sys.executable, "-c", probe_code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", "False"]
