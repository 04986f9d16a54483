"""The warm pool: containers started ahead are handed out once, only what was asked for
is started, and what nobody took is removed when the pool closes."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from codetape.sandbox import Sandbox, _pool
from codetape.sandbox.internal import WarmPool, removal_in_background, warm_pool


class Spawner:
    def __init__(self) -> None:
        self.count = itertools.count()
        self.started: list[int] = []
        self.discarded: list[int] = []

    def spawn(self) -> int:
        item = next(self.count)
        self.started.append(item)
        return item

    def discard(self, item: int) -> None:
        self.discarded.append(item)


def test_nothing_is_started_before_it_is_asked_for() -> None:
    spawner = Spawner()
    with warm_pool():
        pass
    assert spawner.started == []


def test_each_process_is_handed_out_once_and_the_unused_are_removed() -> None:
    spawner = Spawner()
    pool = WarmPool(ahead=1)
    taken = [pool.take("image", spawner.spawn, spawner.discard) for _ in range(4)]
    assert [warm for _, warm in taken] == [False, True, True, True]
    items = [item for item, _ in taken]
    assert len(set(items)) == 4  # a used one never comes back
    pool.close()
    assert spawner.discarded == [4]  # the one started ahead that nobody took
    assert set(spawner.started) == set(items) | {4}


def test_keys_do_not_share_and_the_budget_caps_what_is_started_ahead() -> None:
    spawner = Spawner()
    pool = WarmPool(ahead=2, budget=1)
    first, _ = pool.take(("a", "seed 1"), spawner.spawn, spawner.discard)
    other, warm = pool.take(("a", "seed 2"), spawner.spawn, spawner.discard)
    assert not warm
    assert other != first
    assert len(spawner.started) == 3  # two asked for, one ahead (the budget)
    pool.close()
    assert len(spawner.discarded) == 1


def test_the_pool_is_scoped_and_removals_finish_by_its_end() -> None:
    done = threading.Event()
    assert _pool.current_pool() is None
    assert _pool.remover() is None
    with warm_pool() as pool:
        assert _pool.current_pool() is pool
        remover = _pool.remover()
        assert remover is not None
        remover.submit(done.set)
    assert done.is_set()
    assert _pool.current_pool() is None
    with removal_in_background(join=True):
        again = threading.Event()
        background = _pool.remover()
        assert background is not None
        background.submit(again.set)
    assert again.is_set()


@pytest.mark.docker
def test_containers_started_ahead_are_loaded_yet_each_sandbox_gets_a_fresh_one(
    home: Path, docker_image: str
) -> None:
    """A container started ahead is sent the runner's modules before a sandbox takes it;
    each sandbox still gets a container of its own, with nothing of the one before."""
    with warm_pool(ahead=1):
        seen = []
        for _ in range(3):
            with Sandbox(image=docker_image, hash_seed=7) as sb:
                out = sb.execute(
                    "import socket, os\n"
                    "print('leftover' in dir(), os.listdir('/tmp'))\n"
                    "leftover = 1\n"
                    "open('/tmp/mark', 'w').write('x')\n"
                    "socket.gethostname()"
                )
                assert out.status == "ok", out.error
                assert out.stdout == "False []\n"  # nothing of the sandbox before
                seen.append(out.result)
                # The modules it was sent ahead work: state is pickled with them.
                assert out.state is not None
                assert out.state.checkpoint.data is not None
        assert len(set(seen)) == 3  # three containers, each used once
