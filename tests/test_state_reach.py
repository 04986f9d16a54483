"""Variables a step cannot reach are not looked at again, and every change still is
recorded: through an alias, a helper function, ``setattr``, the agent's loop between
steps, ``exec``/``globals()``, a call through a container, a closure.

Each case records a run with ``@codetape.code_action`` and reads the recorded states
back through ``codetape.Store``, checking the previews, the digests (the fingerprint of
the value as it is) and that each state's checkpoint restores the values as they were.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import codetape
from codetape.sandbox.internal import PICKLE_PROTOCOL, state_codec
from codetape.schemas import Step
from codetape.store.internal import digest_of
from codetape.tracer import _changes, _reach, _state


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> Any:
    exec(code, namespace)
    return namespace.get("result")


def steps(home: Path, run_id: str) -> list[Step]:
    return codetape.Store(home).steps(run_id)


def restored(home: Path, manifest_digest: str | None) -> dict[str, Any]:
    """The variables a recorded state's checkpoint brings back."""
    store = codetape.Store(home)
    assert manifest_digest is not None
    manifest = json.loads(store.blob(manifest_digest))
    point = manifest["checkpoint"]
    assert manifest["complete"], point
    large = {label: store.blob(key) for label, key in point["large"].items()}
    values: dict[str, Any] = state_codec.Codec(cloudpickle).restore(
        store.blob(point["digest"]), large, {}
    )["values"]
    return values


def fingerprint(value: object) -> str:
    return digest_of(cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL))


def record(home: Path, codes: list[str], ns: dict[str, Any]) -> list[Step]:
    with codetape.run("bot") as r:
        for code in codes:
            execute(code, ns)
    return steps(home, r.id)


# -- what a step can change is recorded --------------------------------------------------


def test_a_change_through_an_alias_is_recorded(home: Path) -> None:
    ns: dict[str, Any] = {"a": [1, 2], "other": {"k": 1}}
    ns["b"] = ns["a"]
    recorded = record(home, ["n = 1", "a.append(3)"], ns)
    after = recorded[1].variables_after
    assert after["b"].preview == "[1, 2, 3]"
    assert after["b"].digest == fingerprint([1, 2, 3])
    values = restored(home, recorded[1].state_after)
    assert values["b"] == [1, 2, 3]
    assert values["a"] is values["b"]


def test_a_change_through_an_alias_inside_another_value_is_recorded(home: Path) -> None:
    ns: dict[str, Any] = {"rows": [1, 2]}
    ns["table"] = {"rows": ns["rows"]}
    recorded = record(home, ["n = 1", "table['rows'].append(3)"], ns)
    assert recorded[1].variables_after["rows"].preview == "[1, 2, 3]"
    assert restored(home, recorded[1].state_after)["rows"] == [1, 2, 3]


def test_a_change_through_a_helper_function_is_recorded(home: Path) -> None:
    ns: dict[str, Any] = {"ledger": [10], "totals": {"a": 1}}
    recorded = record(
        home,
        [
            "def add(v):\n    ledger.append(v)\n    totals['a'] += v",
            "x = 1",
            "add(5)",
        ],
        ns,
    )
    after = recorded[2].variables_after
    assert after["ledger"].preview == "[10, 5]"
    assert after["totals"].preview == "{'a': 6}"
    assert recorded[2].variables_before["ledger"].preview == "[10]"
    values = restored(home, recorded[2].state_after)
    assert values["ledger"] == [10, 5]
    assert values["totals"] == {"a": 6}


def test_a_helper_from_an_earlier_run_on_the_same_namespace_is_seen(home: Path) -> None:
    ns: dict[str, Any] = {"ledger": [10]}
    record(home, ["handlers = {'add': lambda v: ledger.append(v)}"], ns)
    # A later run on the same namespace: the lambda lives in a dict, not a variable.
    recorded = record(home, ["n = 1", "f = handlers['add']\nf(7)"], ns)
    assert recorded[1].variables_after["ledger"].preview == "[10, 7]"


def test_a_change_through_setattr_on_an_object_is_recorded(home: Path) -> None:
    ns: dict[str, Any] = {"tags": ["x"]}
    recorded = record(
        home,
        [
            "class Box:\n    pass\nbox = Box()\nbox.n = 1\nbox.tags = tags",
            "setattr(box, 'n', 2)",
            "setattr(box, 'k', 'v')\nbox.tags.append('y')",
        ],
        ns,
    )
    assert "n': 2" not in recorded[0].variables_after["box"].preview
    assert recorded[1].variables_after["box"].digest != recorded[1].variables_before["box"].digest
    assert recorded[2].variables_after["tags"].preview == "['x', 'y']"
    values = restored(home, recorded[2].state_after)
    assert values["box"].n == 2
    assert values["box"].k == "v"
    assert values["box"].tags is values["tags"]
    assert values["tags"] == ["x", "y"]


def test_a_change_the_host_makes_between_steps_is_recorded(home: Path) -> None:
    big = list(range(200_000))
    ns: dict[str, Any] = {"big": big, "cfg": {"mode": "a"}, "buf": bytearray(b"abc")}
    del big
    with codetape.run("bot") as r:
        execute("n = 1", ns)
        ns["big"][5] = -5  # the same length, one element
        ns["cfg"]["mode"] = "b"
        ns["buf"][0] = ord("z")
        execute("m = 2", ns)
        ns["big"][7] = True  # an equal value of another type: still a change
        execute("k = 3", ns)
    recorded = steps(home, r.id)
    before = recorded[1].variables_before
    assert before["big"].digest == fingerprint([*ns["big"][:7], 7, *ns["big"][8:]])
    assert before["cfg"].preview == "{'mode': 'b'}"
    assert before["buf"].preview == "bytearray(b'zbc')"
    assert recorded[0].variables_after["cfg"].preview == "{'mode': 'a'}"
    assert recorded[2].variables_before["big"].digest == fingerprint(ns["big"])
    assert restored(home, recorded[2].state_before)["big"][7] is True


def test_a_change_by_the_host_to_a_value_it_also_holds_is_recorded(home: Path) -> None:
    shared = [1, 2, 3]
    ns: dict[str, Any] = {"shared": shared}
    with codetape.run("bot") as r:
        execute("n = 1", ns)
        shared.append(4)
        execute("m = 2", ns)
    assert steps(home, r.id)[1].variables_before["shared"].preview == "[1, 2, 3, 4]"


@pytest.mark.parametrize(
    "code",
    [
        "exec('data.append(4)')",
        "globals()['data'].append(4)",
        "g = globals\ng()['data'].append(4)",
        "vars()['data'].append(4)",
        "eval('data.append(4)')",
        "fns[0]()",
        "getattr(sys_like, 'go')()",
        "(lambda: data.append(4))()",
    ],
)
def test_changes_the_analysis_cannot_see_through_are_recorded(home: Path, code: str) -> None:
    ns: dict[str, Any] = {"data": [1, 2, 3]}
    execute("def push():\n    data.append(4)\nfns = [push]\nsys_like = type('S', (), {})", ns)
    ns["sys_like"].go = staticmethod(ns.pop("push"))
    recorded = record(home, ["n = 1", code], ns)
    assert recorded[1].variables_after["data"].preview == "[1, 2, 3, 4]"


def test_a_function_kept_inside_a_value_and_called_through_it_is_seen(home: Path) -> None:
    ns: dict[str, Any] = {"data": [1]}
    exec("def push():\n    data.append(2)", ns)  # made by the agent's loop, not a step
    ns["box"] = {"handlers": [ns.pop("push")]}
    recorded = record(home, ["n = 1", "box['handlers'][0]()"], ns)
    assert recorded[1].variables_after["data"].preview == "[1, 2]"


def test_a_change_through_a_closure_is_recorded(home: Path) -> None:
    ns: dict[str, Any] = {"data": [1]}
    execute("def make(target):\n    return lambda: target.append(2)", ns)
    ns["push"] = ns.pop("make")(ns["data"])  # made outside any recorded step
    recorded = record(home, ["n = 1", "push()"], ns)
    assert recorded[1].variables_after["data"].preview == "[1, 2]"


def test_an_executor_that_changes_the_namespace_itself_is_recorded(home: Path) -> None:
    @codetape.code_action
    def run_code(code: str, namespace: dict[str, Any]) -> None:
        exec(code, namespace)
        namespace["history"].append(code)

    ns: dict[str, Any] = {"history": []}
    with codetape.run("bot") as r:
        run_code("n = 1", ns)
        run_code("m = 2", ns)
    recorded = steps(home, r.id)
    assert recorded[1].variables_after["history"].preview == "['n = 1', 'm = 2']"


# -- and what it cannot change is not looked at again -------------------------------------


def test_a_value_no_step_touches_is_described_once(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    described: list[object] = []
    original = state_codec.Snapshotter._variable

    def counting(self: Any, value: Any, plain: bool = False) -> Any:
        described.append(value)
        return original(self, value, plain)

    monkeypatch.setattr(state_codec.Snapshotter, "_variable", counting)
    ns: dict[str, Any] = {"table": list(range(100_000)), "index": {i: i for i in range(1000)}}
    recorded = record(home, [f"x = {i}" for i in range(5)], ns)
    assert sum(1 for v in described if v is ns["table"]) == 1
    assert sum(1 for v in described if v is ns["index"]) == 1
    for step in recorded:
        assert step.variables_after["table"].digest == fingerprint(ns["table"])
    assert restored(home, recorded[-1].state_after)["table"] == list(range(100_000))


def test_private_untouched_values_skip_even_the_check(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[int] = []
    original = _changes._list_probe

    def counting(value: list[Any]) -> _changes.Check:
        check = original(value)

        def counted(current: list[Any]) -> bool:
            checked.append(len(current))
            return check(current)

        return counted

    monkeypatch.setattr(_changes, "_list_probe", counting)
    ns: dict[str, Any] = {}
    with codetape.run("bot"):
        execute("table = list(range(1000))", ns)
        checked.clear()
        for i in range(3):
            execute(f"x = {i}", ns)
    # Once per step, before it (the loop may have changed it); never after it.
    assert checked == [1000, 1000, 1000]


def test_reach_of_code() -> None:
    reach = _reach.reach_of("import json as j\nfor o in orders:\n    o.total += 1\ndel tmp")
    assert {"j", "orders", "o", "tmp"} <= reach.names
    assert not reach.dynamic
    defined = _reach.reach_of("def f(x):\n    return ledger.append(x)\ng = lambda: cache")
    assert {"ledger", "cache"} <= defined.bodies
    for dynamic in (
        "import sys",
        "from gc import get_objects",
        "x = f.__globals__",
        "getattr(obj, name)",
        "exec(code)",
        "y = (",
    ):
        assert _reach.reach_of(dynamic).dynamic, dynamic
    for hidden in ("make()()", "items[0]()", "obj.method(1).strip()", "(f or g)()"):
        reach = _reach.reach_of(hidden)
        assert reach.hidden_calls, hidden
        assert not reach.dynamic, hidden
    plain = _reach.reach_of("getattr(obj, 'name')\nobj.method(1)\nnp.linalg.norm(v)")
    assert not plain.dynamic
    assert not plain.hidden_calls


@pytest.mark.parametrize(
    ("value", "change"),
    [
        ([1, 2, 3], lambda v: v.__setitem__(0, 1.0)),
        (list(range(1000)), lambda v: v.__setitem__(999, 999.0)),
        ([1, "a"], lambda v: v.append(None)),
        ({"a": 1}, lambda v: v.__setitem__("a", True)),
        ({"a": 1}, lambda v: (v.pop("a"), v.__setitem__("a", 1))),
        (bytearray(b"abc"), lambda v: v.__setitem__(1, 0)),
        ({1, 2}, lambda v: (v.discard(1), v.add(1.0))),
    ],
)
def test_change_checks_are_exact(value: Any, change: Any) -> None:
    check = _changes.probe(value)
    assert check is not None
    assert check(value)
    change(value)
    assert not check(value)


@pytest.mark.parametrize(
    ("value", "change"),
    [
        ([{"id": 1}, {"id": 2}], lambda v: v[1].__setitem__("id", 3)),
        ([{"id": 1}, {"id": 2}], lambda v: v.__setitem__(1, {"id": 2})),  # an equal new one
        ({"a": [1, 2], "b": (3, [4])}, lambda v: v["b"][1].append(5)),
        ({"k": {1, 2}}, lambda v: v["k"].add(3)),
        ([bytearray(b"ab")], lambda v: v[0].extend(b"c")),
    ],
)
def test_change_checks_of_nested_containers_are_exact(value: Any, change: Any) -> None:
    check = _changes.probe(value)
    assert check is not None
    assert not _changes.flat(check)
    assert check(value)
    change(value)
    assert not check(value)


def test_values_without_a_cheap_check_have_none() -> None:
    assert _changes.probe(object()) is None
    assert _changes.probe([object()]) is None
    assert _changes.probe({"a": [1, object()]}) is None
    assert _changes.probe([[0]] * 10 + [list(range(3)) for _ in range(20_000)]) is None
    assert _changes.immutable(_changes.probe((1, "a")))
    assert _changes.flat(_changes.probe([1, "a"]))


def test_privacy_is_counted_for_this_interpreter() -> None:
    ns: dict[str, Any] = {"v": []}
    memo = (ns["v"],)
    assert _state._refs(ns, "v") == _state._PRIVATE_REFS
    alias = ns["v"]
    assert _state._refs(ns, "v") != _state._PRIVATE_REFS
    del alias, memo


@pytest.mark.parametrize(
    "value",
    [
        {"order_id": "A-1", "amount": 250.0, "status": "refunded"},
        [{"id": i, "tags": ("a", "b"), "seen": {i}} for i in range(5)],
        (1, "a", b"x", None, 2.5, 1j, True, range(3)),
        {1: {2: [3, bytearray(b"z")]}, (1, 2): frozenset({"k"})},
    ],
)
def test_plain_data_pickles_the_same_with_the_standard_pickler(value: Any) -> None:
    assert _changes.plain(value)
    assert pickle.dumps(value, protocol=PICKLE_PROTOCOL) == cloudpickle.dumps(
        value, protocol=PICKLE_PROTOCOL
    )


def test_data_with_anything_else_is_not_plain() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert not _changes.plain(cyclic)
    assert not _changes.plain([1, object()])
    assert not _changes.plain({"f": len})
