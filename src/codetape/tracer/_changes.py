"""Change checks: whether a variable's value is still exactly what it was when it was
last described, without pickling it again.

``probe(value)`` gives a check for the values whose content it can compare exactly and
cheaply, and None for the rest (they are pickled again, as before):

- scalars, strings and bytes, and tuples and frozensets of them, cannot change: the
  variable still being bound to the same object is the whole check;
- a ``list`` of those keeps a copy of its element references and compares them by
  identity (one ``memcmp`` of the two pointer arrays where CPython's layout allows it);
- a ``dict`` of those compares CPython's version tag, which every change of the dict
  moves (PEP 509), or else its keys and values by identity;
- a ``bytearray`` keeps a copy and compares bytes; a small ``set`` compares identities;
- a large list's array of references or a large ``bytearray``'s bytes is instead
  watched by the kernel where it can (``_writes``): a check is then one scan of the
  range's page table for written pages, whatever the size, and no copy is kept.

A copy holds the old elements, so a new element can never sit at a freed old one's
address and look the same (a watched list needs none: no byte of its references was
written, so it still holds the very same elements). Anything the checks cannot be sure
of has no check.
"""

from __future__ import annotations

import operator
import struct
import sys
import sysconfig
from collections.abc import Callable
from typing import Any, cast

__all__ = ["Check", "flat", "immutable", "plain", "probe", "random_key"]

Check = Callable[[Any], bool]

_ATOMS = frozenset({int, float, complex, bool, str, bytes, type(None), range})
_CONTAINERS = frozenset({list, dict, tuple, set, frozenset, bytearray})
_TREE_LIMIT = 10_000  # containers in one value: past it, the value is pickled instead
_SMALL = 64  # elements compared in Python rather than with memcmp
_SET_LIMIT = 4096
_POINTER = struct.calcsize("P")
_WATCHED = 1 << 20  # bytes of a buffer from which the kernel watches it for writes


def _same(value: object) -> bool:
    return True


def _NO_CHECK(value: object) -> bool:  # a marker: a set too large to compare
    return False


def _atoms(values: Any) -> bool:
    return set(map(type, values)).issubset(_ATOMS)


# -- CPython's layouts, each confirmed on a live object before it is trusted ------------


def _cpython() -> bool:
    return (
        sys.implementation.name == "cpython"
        and not hasattr(sys, "gettotalrefcount")  # a debug build
        and not sysconfig.get_config_var("Py_GIL_DISABLED")
    )


def _list_memcmp() -> (
    tuple[Callable[[list[Any], list[Any]], bool], Callable[[list[Any]], int]] | None
):
    """``equal(a, b)`` for two lists of one length: their element pointers compared
    with libc's ``memcmp`` (the GIL held), and ``items(a)``: the address of a list's
    array of element pointers; None where the layout is not CPython's."""
    try:
        import ctypes

        word = ctypes.sizeof(ctypes.c_void_p)
        offset = 3 * word  # PyVarObject's header, then ob_item
        sample = [object(), object(), object()]
        if ctypes.c_ssize_t.from_address(id(sample) + 2 * word).value != len(sample):
            return None
        array = ctypes.c_void_p.from_address(id(sample) + offset).value
        if not array or list((ctypes.c_void_p * 3).from_address(array)) != list(map(id, sample)):
            return None
        memcmp = ctypes.PyDLL(None).memcmp
        memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
        memcmp.restype = ctypes.c_int
        address = ctypes.c_void_p.from_address
    except Exception:
        return None

    def items(a: list[Any]) -> int:
        return address(id(a) + offset).value or 0

    def equal(a: list[Any], b: list[Any]) -> bool:
        found: int = memcmp(items(a), items(b), len(a) * word)
        return found == 0

    return equal, items


def _dict_version() -> Callable[[dict[Any, Any]], int] | None:
    """A dict's version tag (``ma_version_tag``), where it moves on every change."""
    try:
        import ctypes

        word = ctypes.sizeof(ctypes.c_void_p)
        read = ctypes.c_uint64.from_address

        def version(d: dict[Any, Any]) -> int:
            return int(read(id(d) + 3 * word).value)

        sample: dict[str, object] = {}
        if ctypes.c_ssize_t.from_address(id(sample) + 2 * word).value != 0:
            return None
        seen = [version(sample)]
        for step in range(5):
            if step < 2:
                sample["k"] = object()
            elif step == 2:
                sample["j"] = 1
            elif step == 3:
                del sample["k"]
            else:
                sample.clear()
            seen.append(version(sample))
        if len(set(seen)) != len(seen) or sorted(seen) != seen:
            return None
    except Exception:
        return None
    return version


_list_layout = _list_memcmp() if _cpython() else None
_list_equal = _list_layout[0] if _list_layout else None
_version = _dict_version() if _cpython() else None


# -- the checks --------------------------------------------------------------------------


def _watched(address: int, size: int, where: Callable[[Any], int]) -> Check | None:
    """A check of a buffer of ``size`` bytes at ``address`` (``where(value)`` finds it
    again) by the kernel's write tracking, or None where it cannot watch it. The buffer
    must still be where it was, no page of it written, and its bytes before the first
    and after the last whole page (compared by copy) unchanged."""
    import ctypes

    from ._writes import watcher

    found = watcher()
    watch = found.watch(address, size) if found is not None else None
    if watch is None:
        return None
    head = ctypes.string_at(address, watch.start - address)
    tail = ctypes.string_at(watch.end, address + size - watch.end)
    read = ctypes.string_at

    def check(current: Any) -> bool:
        return (
            where(current) == address
            and not watch.written()
            and read(address, len(head)) == head
            and read(watch.end, len(tail)) == tail
        )

    return check


def _bytearray_start(value: bytearray) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(value)) if value else 0


def _list_probe(value: list[Any]) -> Check:
    size = len(value)
    layout = _list_layout
    if layout is not None and size * _POINTER >= _WATCHED:
        items = layout[1]
        watched = _watched(items(value), size * _POINTER, items)
        if watched is not None:
            return lambda current: len(current) == size and watched(current)
    saved = list(value)
    size = len(saved)
    equal = _list_equal

    def check(current: list[Any]) -> bool:
        if len(current) != size:
            return False
        if equal is not None and size > _SMALL:
            return equal(current, saved)
        return all(map(operator.is_, current, saved))

    return check


def _dict_probe(value: dict[Any, Any]) -> Check:
    version = _version
    if version is not None:
        tag = version(value)
        return lambda current: version(current) == tag
    keys, values = list(value), list(value.values())

    def check(current: dict[Any, Any]) -> bool:
        return (
            len(current) == len(keys)
            and all(map(operator.is_, current, keys))
            and all(map(operator.is_, current.values(), values))
        )

    return check


def _set_probe(value: set[Any]) -> Check:
    saved = {id(item): item for item in value}
    return lambda current: len(current) == len(saved) and all(id(i) in saved for i in current)


def _bytearray_probe(value: bytearray) -> Check:
    size = len(value)
    if size >= _WATCHED:
        watched = _watched(_bytearray_start(value), size, _bytearray_start)
        if watched is not None:
            return lambda current: len(current) == size and watched(current)
    saved = bytes(value)
    return lambda current: current == saved


def probe(value: object) -> Check | None:
    """A check that stays true while ``value`` is unchanged, or None when no cheap
    exact check exists for it."""
    kind = type(value)
    if kind in _ATOMS:
        return _same
    if kind is bytearray:
        return _flat(_bytearray_probe(cast(bytearray, value)))
    if kind is list and _atoms(value):
        return _flat(_list_probe(cast(list[Any], value)))
    if kind is dict:
        d = cast(dict[Any, Any], value)
        if _atoms(d) and _atoms(d.values()):
            return _flat(_dict_probe(d))
    if (kind is tuple or kind is frozenset) and _atoms(value):
        return _same
    if kind in _CONTAINERS:
        return _tree_probe(value)
    return None


def _shallow(value: Any) -> Check | None:
    """The check of one container's own items, or None (an immutable one has none)."""
    kind = type(value)
    if kind is list:
        return _list_probe(value)
    if kind is dict:
        return _dict_probe(value)
    if kind is set:
        return _set_probe(value) if len(value) <= _SET_LIMIT else _NO_CHECK
    if kind is bytearray:
        return _bytearray_probe(value)
    return None


def _tree_probe(value: object) -> Check | None:
    """The check of a tree of the standard containers with scalars, strings and bytes
    for leaves (a list of dicts, say): each container's own check, the tree's shape
    held by each parent's. None for anything else, or past ``_TREE_LIMIT`` containers."""
    checks: list[tuple[Any, Check]] = []
    stack: list[Any] = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _ATOMS or id(item) in seen:
            continue
        if kind not in _CONTAINERS or len(seen) >= _TREE_LIMIT:
            return None
        seen.add(id(item))
        own = _shallow(item)
        if own is _NO_CHECK:
            return None
        if own is not None:
            checks.append((item, own))
        if kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind is not bytearray:
            stack.extend(item)
    return lambda current: all(check(part) for part, check in checks)


def plain(value: object) -> bool:
    """Whether ``value`` is built of the standard containers and scalars, strings and
    bytes only (up to ``_TREE_LIMIT`` containers): the standard pickler then writes the
    same bytes as cloudpickle's."""
    stack: list[Any] = [value]
    containers = 0
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _ATOMS:
            continue
        containers += 1
        if kind not in _CONTAINERS or containers > _TREE_LIMIT:
            return False
        if kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind is not bytearray:
            stack.extend(item)
    return True


def _flat(check: Check) -> Check:
    """Mark a check of a container that holds no other container: its value, held by
    nothing but its namespace, cannot be changed without being named."""
    check.flat = True  # type: ignore[attr-defined]
    return check


def flat(check: Check | None) -> bool:
    """Whether ``check`` is a flat container's (see ``_flat``)."""
    return getattr(check, "flat", False)


def immutable(check: Check | None) -> bool:
    """Whether a value with this check can never change (it needs no privacy)."""
    return check is _same


def _random_reader() -> Callable[[], object] | None:
    """A cheap exact key of the ``random`` module's state: the Mersenne Twister's words
    read where CPython keeps them (checked against ``getstate()``), and ``gauss_next``;
    None where that layout is not confirmed."""
    import random
    import struct

    instance = getattr(random, "_inst", None)
    if type(instance) is not random.Random or not _cpython():
        return None
    try:
        import ctypes

        offset, size = 2 * ctypes.sizeof(ctypes.c_void_p), 4 + 624 * 4
        read = ctypes.string_at
        words = instance.getstate()[1]
        raw = struct.unpack("=i624I", read(id(instance) + offset, size))
        if raw[1:] + raw[:1] != words:
            return None
    except Exception:
        return None

    def key() -> object:
        return read(id(instance) + offset, size), getattr(instance, "gauss_next", None)

    return key


random_key = _random_reader()
