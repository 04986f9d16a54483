"""codetape's state codec: how a namespace becomes a fingerprint per variable and one
checkpoint that keeps the object graph, and how a checkpoint becomes a namespace again.

The same source serves both sides: the host imports it (observed steps are snapshotted
in the agent's process) and the runner receives it as source, like cloudpickle's, so a
value has one fingerprint wherever it was taken. It imports only the standard library;
cloudpickle is handed in. Plain code without annotations, for any python3 an image has.

- A **fingerprint** is the sha256 of a deterministic pickle of the value: a class or
  function made by the agent's code is named by its qualified name and code (cloudpickle
  would give a class a fresh id on every pickle), a module by its import name and a tool
  by its tool name. Equal values of such classes compare equal, record and replay alike.
- A **checkpoint** is one cloudpickle of every restorable variable together, so aliases
  and cycles survive. Tools inside it are named, not pickled, and come back as the
  restoring side's tools; modules are re-imported; a value whose pickle is larger than
  ``LARGE`` is pickled on its own (its own blob, stored once however many steps keep it)
  and referenced from the checkpoint, so shared references to it stay one object.
- What pickling cannot carry (a generator, an open file, a lock, a function of an
  interpreter such as smolagents') is not restorable, with the reason; replay rebuilds
  it by re-running the steps before.
"""

import hashlib
import io
import pickle
import re
import reprlib
import sys
import types

PROTOCOL = 4
LARGE = 1 << 20
TOOLS_MODULE = "codetape_tools"
_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]+")
# Functions an interpreter makes for the agent's code hold the interpreter itself: they
# are fingerprinted by their source and rebuilt by re-running the steps that made them.
_INTERPRETER_MODULES = ("smolagents.",)


def make_repr():
    """The repr that previews are taken with, on both sides. Strings are long on purpose:
    the host redacts secrets and only then shortens, so a secret is never cut in two
    before it can be recognised."""
    shown = reprlib.Repr()
    shown.maxstring = shown.maxother = 4000
    shown.maxlist = shown.maxtuple = shown.maxset = shown.maxdict = 12
    shown.maxfrozenset = shown.maxdeque = shown.maxarray = 12
    shown.maxlevel = 3
    return shown


def mask_addresses(text):
    """Memory addresses differ on every run: ``<Order object at 0x7f…>`` → ``at 0x…``."""
    return _ADDRESS.sub("at 0x…", text)


def qualified_name(cls):
    """``module.Qualname``, or just the name for builtins: one form for a type's name,
    wherever it is recorded or replayed."""
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", None) or getattr(cls, "__name__", "?")
    if not isinstance(module, str) or module in ("builtins", "__builtin__"):
        return name
    return "%s.%s" % (module, name)


def tools_module():
    """The module restored checkpoints take tools from (``getattr(module, name)``)."""
    module = sys.modules.get(TOOLS_MODULE)
    if module is None:
        module = sys.modules[TOOLS_MODULE] = types.ModuleType(TOOLS_MODULE)
    return module


def tool_name(obj):
    """The tool name of a tool stub or recorded tool (``__codetape_tool__``), else None.
    Reads the instance dict only: proxies that answer any attribute are not tools."""
    try:
        attrs = object.__getattribute__(obj, "__dict__")
        marker = attrs.get("__codetape_tool__")
    except Exception:
        return None
    if not marker:
        return None
    if isinstance(marker, str):
        return marker
    name = getattr(obj, "__name__", None) if isinstance(obj, types.FunctionType) else None
    return name if isinstance(name, str) else None


def _importable(obj):
    """Whether ``obj`` (a class or function) is found again by module and qualname."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    qualname = getattr(obj, "__qualname__", "")
    if module is None or not qualname or "<locals>" in qualname:
        return False
    found = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            return False
    return found is obj


def _code_key(code):
    """A deterministic description of a code object (marshal is not: it depends on
    reference counts)."""
    parts = [code.co_name, code.co_code, code.co_names, code.co_varnames]
    for const in code.co_consts:
        parts.append(_code_key(const) if isinstance(const, types.CodeType) else repr(const))
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _interpreter_made(obj):
    module = getattr(obj, "__module__", None) or ""
    return isinstance(obj, types.FunctionType) and module.startswith(_INTERPRETER_MODULES)


def _member_key(value):
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        return "property:" + ",".join(_member_key(f) for f in (value.fget, value.fset) if f)
    source = getattr(value, "__source__", None)
    if isinstance(source, str):
        return "source:" + hashlib.sha256(source.encode()).hexdigest()[:16]
    code = getattr(value, "__code__", None)
    if isinstance(code, types.CodeType):
        return "code:" + _code_key(code)
    return type(value).__name__


def _class_token(cls):
    members = sorted(
        (name, _member_key(value))
        for name, value in list(vars(cls).items())
        if not name.startswith("__") or name in ("__init__", "__call__", "__eq__", "__repr__")
    )
    bases = [qualified_name(base) for base in cls.__bases__]
    body = repr((bases, members)).encode()
    return "class:%s:%s" % (qualified_name(cls), hashlib.sha256(body).hexdigest()[:16])


def _function_token(fn):
    source = getattr(fn, "__source__", None)
    body = source if isinstance(source, str) else repr(getattr(fn, "__qualname__", ""))
    return "interpreter:function:%s:%s" % (
        getattr(fn, "__name__", "?"),
        hashlib.sha256(body.encode()).hexdigest()[:16],
    )


class Described(object):
    """A value's fingerprint (``digest``), the pickle it was taken from (``data``),
    whether that pickle is also a checkpoint of it (``exact``), and why it cannot be
    restored (``reason``, None when it can)."""

    __slots__ = ("data", "digest", "exact", "reason")

    def __init__(self, digest, data, exact, reason):
        self.digest = digest
        self.data = data
        self.exact = exact
        self.reason = reason


def _fingerprinter(base):
    """The pickler fingerprints are taken with: names instead of bytes for what
    differs between processes (see ``_token``)."""

    class Fingerprinter(base):
        def __init__(self, file):
            base.__init__(self, file, protocol=PROTOCOL)
            self.tokens = False
            self.opaque = None

        def reducer_override(self, obj):
            token = _token(obj)
            if token is None:
                return base.reducer_override(self, obj)
            self.tokens = True
            if token.startswith("interpreter:"):
                self.opaque = (
                    "made by the agent's interpreter (%s): rebuilt by re-running the "
                    "steps that made it" % getattr(obj, "__name__", "?")
                )
            return (str, (token,))

    return Fingerprinter


def _checkpointers(base):
    """The picklers of checkpoints: tools named, not pickled (``ToolPickler``), and
    objects pickled elsewhere referenced by label (``LinkedPickler``)."""

    class ToolPickler(base):
        def __init__(self, file):
            base.__init__(self, file, protocol=PROTOCOL)

        def reducer_override(self, obj):
            name = tool_name(obj)
            if name is not None:
                return (getattr, (tools_module(), name))
            return base.reducer_override(self, obj)

    class LinkedPickler(ToolPickler):
        def __init__(self, file, labels):
            ToolPickler.__init__(self, file)
            self.labels = labels

        def persistent_id(self, obj):
            return self.labels.get(id(obj))

    return ToolPickler, LinkedPickler


class _PlainLinked(pickle.Pickler):
    """The standard pickler, with other large values referenced by label: for values
    of the standard containers and scalars, the same bytes as ``LinkedPickler``'s."""

    def __init__(self, file, labels):
        pickle.Pickler.__init__(self, file, protocol=PROTOCOL)
        self.labels = labels

    def persistent_id(self, obj):
        return self.labels.get(id(obj))


class Codec(object):
    """Fingerprints, checkpoints and restores namespaces with a given cloudpickle."""

    def __init__(self, cloudpickle):
        self.cloudpickle = cloudpickle
        tools_module()  # checkpoints name it; it must be importable while pickling
        self._fingerprinter = _fingerprinter(cloudpickle.Pickler)
        self._tool_pickler, self._linked_pickler = _checkpointers(cloudpickle.Pickler)

    def describe(self, value, plain=False):
        """The value's fingerprint and pickle, or why it has none. ``plain``: the value
        is built of the standard containers and scalars only, which no reducer of
        cloudpickle's or ours changes, so the standard pickler gives the same bytes."""
        if plain or type(value) in _SCALARS:
            data = pickle.dumps(value, protocol=PROTOCOL)
            return Described("sha256:" + hashlib.sha256(data).hexdigest(), data, True, None)
        buffer = io.BytesIO()
        pickler = self._fingerprinter(buffer)
        try:
            pickler.dump(value)
        except Exception as exc:
            reason = "cannot be serialized: %s: %s" % (type(exc).__name__, exc)
            return Described(None, None, False, reason[:500])
        data = buffer.getvalue()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return Described(digest, data, not pickler.tokens, pickler.opaque)

    def dump_large(self, value, others=None):
        """A large value's own pickle; ``others`` maps ``id()`` of the other large
        values to their labels (then each is referenced, not copied)."""
        buffer = io.BytesIO()
        if others:
            self._linked_pickler(buffer, others).dump(value)
        else:
            self._tool_pickler(buffer).dump(value)
        return buffer.getvalue()

    def checkpoint(self, values, large, plain=False):
        """One pickle of ``values`` (name → value); ``large`` maps ``id(value)`` to the
        key of a value pickled on its own; ``plain`` as for ``describe``."""
        if plain and not large:
            return pickle.dumps(values, protocol=PROTOCOL)
        buffer = io.BytesIO()
        (_PlainLinked if plain else self._linked_pickler)(buffer, large).dump(values)
        return buffer.getvalue()

    def restore(self, data, large, tools):
        """The namespace of a checkpoint. ``large`` maps labels to their pickles;
        ``tools`` maps tool names to what the restored code should call."""
        module = tools_module()
        for name, tool in tools.items():
            setattr(module, name, tool)
        loaded = {}

        class Restorer(pickle.Unpickler):
            def persistent_load(self, label):
                if label not in loaded:
                    loaded[label] = Restorer(io.BytesIO(large[label])).load()
                return loaded[label]

        return Restorer(io.BytesIO(data)).load()


def _token(obj):
    """How the fingerprint names ``obj`` instead of pickling it, or None."""
    if isinstance(obj, types.ModuleType):
        return "module:" + obj.__name__
    name = tool_name(obj)
    if name is not None:
        return "tool:" + name
    if isinstance(obj, type):
        if _importable(obj):
            return None
        token = _class_token(obj)
        members = list(vars(obj).values())
        if any(_interpreter_made(getattr(m, "__func__", m)) for m in members):
            return "interpreter:" + token  # its methods hold the interpreter
        return token
    if _interpreter_made(obj) and not _importable(obj):
        return _function_token(obj)
    return None


class Snapshotter(object):
    """Takes snapshots of one namespace, step after step: each variable's record and
    fingerprint, the module and tool bindings, and a checkpoint of the whole, re-made
    only when a fingerprint, a binding or an alias changed.

    ``known`` is the set of digests the other side already holds: their bytes are not
    handed out again. A snapshot is a dict of plain values and bytes.

    With ``probes`` (``probes(value)`` gives a check ``check(value) -> bool`` that is
    true while the value is as it was when described, or None), a variable still bound
    to the object it was bound to at the last snapshot is described again only when
    its check says it changed or it has none; one the caller names in ``unchanged`` is
    not checked at all. The host snapshots this way; the runner describes every value
    each time. A value whose pickle is over ``large`` bytes is its own blob in
    checkpoints, pickled again only when it changed.
    """

    def __init__(self, codec, shown=None, probes=None, large=LARGE):
        self.codec = codec
        self.shown = shown or make_repr()
        self.known = set()
        self.probes = probes
        self.large = large
        # Immutable values cannot change: describe each once. The cache holds the
        # object, so its id cannot be reused by another while cached.
        self._immutable = {}
        # With probes: name -> (value, record, description without its bytes, check).
        self.memo = {}
        # label -> (flat, the other large values it could hold, blob key, bytes or None)
        self._dumps = {}
        self._last = None  # (signature, checkpoint record)
        self._bindings = None  # (modules, tools, name, extra) of the last snapshot

    def forget_checkpoint(self):
        self._last = None
        self._bindings = None

    def take(self, items, name=None, extra=(), unchanged=()):
        """Snapshot ``items`` (name, value pairs); ``name`` is the namespace's
        ``__name__``; ``extra`` adds to the checkpoint's signature (files); the names
        in ``unchanged`` are known not to have changed since the last snapshot.
        ``changed`` in the result is false when it equals the last snapshot."""
        memo, self.memo = self.memo, {}
        found = self._describe_all(items, memo, unchanged)
        state, modules, tools, values, large, data, fresh, plain = found
        bindings = (modules, tools, name, tuple(extra))
        changed = fresh or len(memo) != len(self.memo) or bindings != self._bindings
        if changed or self._last is None:
            checkpoint = self._checkpoint(state, modules, values, large, name, extra, plain)
        else:
            checkpoint = dict(self._last[1], data=None, blobs={})
        self._bindings = bindings
        return {
            "variables": state,
            "data": data,
            "modules": modules,
            "tools": tools,
            "checkpoint": checkpoint,
            "changed": changed,
        }

    def _describe_all(self, items, memo, unchanged):
        """Each variable's record (and the bindings), from the memo where it holds."""
        state, modules, tools, values, large, data = {}, {}, {}, {}, {}, {}
        probing = self.probes is not None
        fresh = not probing
        plain = probing  # every value has a check: standard containers and scalars
        for key, value in items:
            if key.startswith("__"):
                continue
            kind = type(value)
            if kind is types.ModuleType or (
                kind not in _BUILTIN and isinstance(value, types.ModuleType)
            ):
                modules[key] = value.__name__
                values[key] = value
                plain = False
                continue
            tool = None if kind in _BUILTIN else tool_name(value)
            if tool is not None:
                tools[key] = tool
                continue
            entry = memo.get(key) if probing else None
            if (
                entry is not None
                and entry[0] is value
                and (key in unchanged or (entry[3] is not None and entry[3](value)))
            ):
                # As last time: its bytes were handed out then.
                self.memo[key] = entry
                state[key] = entry[1]
                plain = plain and entry[3] is not None
                if entry[2].reason is None:
                    values[key] = value
                    if entry[1]["size"] > self.large:
                        large[id(value)] = (entry[2].digest, value, entry[2])
                continue
            if probing:
                var, described, entry, again = self._remembered(key, value, entry)
                fresh = fresh or again
            else:
                var, described = self._variable(value)
            plain = plain and entry is not None and entry[3] is not None
            state[key] = var
            if described.digest is not None and described.digest not in self.known:
                data[described.digest] = described.data
                self.known.add(described.digest)
            if described.reason is None:
                values[key] = value
                if var["size"] > self.large:
                    large[id(value)] = (described.digest, value, described)
        return state, modules, tools, values, large, data, fresh, plain

    def _remembered(self, key, value, old):
        """Describe ``value`` again and remember it as ``key``'s: its record, its
        description (with its bytes, to hand out once; the memo keeps it without), the
        memo entry, and whether it is new. A value without a check that is still the
        object ``old`` describes, with the same fingerprint, keeps ``old``'s record:
        its preview is not taken again."""
        check = self.probes(value)
        if check is None and old is not None and old[0] is value:
            described = self.codec.describe(value)
            if described.digest == old[2].digest and described.reason == old[2].reason:
                self.memo[key] = old
                return old[1], old[2], old, False
            var = self._record(value, described)
        elif check is not None and old is not None and old[3] is not None:
            var, described = self._variable_as(value, True, old)
        else:
            var, described = self._variable(value, check is not None)
        if described.digest is None or described.reason is not None:
            check = None
        bare = Described(described.digest, None, described.exact, described.reason)
        entry = self.memo[key] = (value, var, bare, check)
        return var, described, entry, True

    def _variable(self, value, plain=False):
        return self._variable_as(value, plain, None)

    def _variable_as(self, value, plain, old):
        """``old``: the memo entry of the plain value this one replaces. The same pickle
        is the same containers and scalars, so the same record (no new preview)."""
        cached = self._immutable.get(id(value))
        if cached is not None and cached[0] is value:
            return dict(cached[1]), cached[2]
        described = self.codec.describe(value, plain)
        if old is not None and described.digest == old[2].digest:
            var = old[1]
        else:
            var = self._record(value, described)
        if type(value) in _IMMUTABLE and described.digest is not None:
            if len(self._immutable) >= 4096:
                self._immutable.clear()
            self._immutable[id(value)] = (value, dict(var), described)
        return var, described

    def _record(self, value, described):
        """A variable's record: its type, preview, size, fingerprint and reason."""
        kind = _BUILTIN_NAMES.get(type(value)) or qualified_name(type(value))
        try:
            preview = _plain_repr(value)
            if preview is None:
                preview = mask_addresses(self.shown.repr(value))
        except Exception as exc:
            preview = "<%s: repr failed: %s>" % (kind, type(exc).__name__)
        return {
            "type": kind,
            "preview": preview,
            "size": len(described.data) if described.data is not None else 0,
            "digest": described.digest,
            "reason": described.reason,
        }

    def _large(self, large):
        """Each large value's pickle by label (its fingerprint): its fingerprint's own
        bytes when it can hold none of the other large values, else a pickle naming
        the others it shares. A value is pickled again only when it changed or the
        others it could hold did."""
        labels = dict((value_id, entry[0]) for value_id, entry in large.items())
        scalars = frozenset(e[0] for e in large.values() if type(e[1]) in _SCALARS)
        blobs, dumps = {}, {}
        for value_id, (label, value, described) in large.items():
            cached = self._dumps.get(label)
            flat = cached[0] if cached is not None else _flat(value)
            # The others it could hold: a list or dict of scalars holds only scalars.
            context = (scalars if flat else frozenset(labels.values())) - set([label])
            if cached is None or cached[1] != context:
                if described.exact and described.data is not None and not context:
                    blob = described.data
                else:
                    others = dict((i, lab) for i, lab in labels.items() if i != value_id)
                    blob = self.codec.dump_large(value, others)
                cached = (flat, context, "sha256:" + hashlib.sha256(blob).hexdigest(), blob)
            if cached[3] is not None and cached[2] in self.known:
                cached = (*cached[:3], None)  # handed out: the bytes can go
            dumps[label] = cached
            blobs[label] = (cached[2], cached[3])
        self._dumps = dumps
        return labels, blobs

    def _checkpoint(self, state, modules, values, large, name, extra, plain=False):
        names = sorted(values)
        first = {}
        signature = (
            tuple(names),
            tuple([state[n]["digest"] if n in state else modules[n] for n in names]),
            tuple([first.setdefault(id(values[n]), n) for n in names]),
            name,
            tuple(extra),
        )
        if self._last is not None and self._last[0] == signature:
            return dict(self._last[1], data=None, blobs={})
        record = {"names": names, "name": name, "large": {}}
        try:
            labels, blobs = self._large(large) if large else ({}, {})
            data = self.codec.checkpoint({"values": values, "name": name}, labels, plain)
        except Exception as exc:
            record["digest"] = None
            record["reason"] = "the namespace cannot be checkpointed: %s: %s" % (
                type(exc).__name__,
                str(exc)[:300],
            )
            self._last = (signature, record)
            return dict(record, data=None, blobs={})
        record["large"] = dict((label, key) for label, (key, _) in blobs.items())
        record["digest"] = "sha256:" + hashlib.sha256(data).hexdigest()
        record["reason"] = None
        self._last = (signature, record)
        fresh = dict((key, blob) for key, blob in blobs.values() if key not in self.known and blob)
        self.known.update(fresh)
        return dict(record, data=data, blobs=fresh)


def _plain_repr(value):
    """A scalar's preview without reprlib (the same text, much faster), else None."""
    kind = type(value)
    if kind is bool or kind is float or value is None:
        return repr(value)
    if kind is int and -_BIG_INT < value < _BIG_INT:
        return repr(value)
    return None


def _flat(value):
    """Whether ``value`` is a list, dict or bytearray of scalars, strings and bytes: its
    pickle can name no other value."""
    kind = type(value)
    if kind is bytearray:
        return True
    if kind is dict:
        return _atoms(value) and _atoms(value.values())
    return kind is list and _atoms(value)


def _atoms(values):
    return set(map(type, values)).issubset(_ATOMS)


_BIG_INT = 10**39  # reprlib shortens ints of more than 40 characters
_SCALARS = frozenset((int, float, complex, bool, str, bytes, type(None)))
# Types whose instances are neither modules nor tools (no instance dict to mark one).
_BUILTIN = _SCALARS | frozenset((list, dict, tuple, set, frozenset, bytearray, range))
_BUILTIN_NAMES = dict((kind, kind.__name__) for kind in _BUILTIN)
_ATOMS = frozenset((int, float, complex, bool, str, bytes, type(None)))


_IMMUTABLE = (str, bytes, int, float, complex, bool, frozenset, range, type(None))
