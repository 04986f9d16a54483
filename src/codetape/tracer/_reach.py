"""Which variables a code action can change, read from its code.

A step changes an object only through a reference to it. A variable's value that only
the namespace refers to (``private``, see ``_state``) is reached only by looking its
name up in the namespace: by the step's own code, or by a function whose globals are
the namespace (a helper a step defined, or one the agent's interpreter made), so the
names those use are the names a step can touch. Code that reaches the namespace any
other way (``exec``, ``eval``, ``globals()``, ``vars()``, frames, ``__globals__``,
reflective modules such as ``sys`` or ``gc``) is ``dynamic``: every variable is checked
again, as before. A call of something that is not a name or an attribute of one
(``handlers[0]()``, ``make()()``, ``getattr(obj, name)()``) may run a function kept
inside a value: the values are searched for such functions first, and when that search
is too long, every variable is checked again too.

What this does not see: a function that looks names up in the namespace, made outside
any recorded step and kept where the namespace's values do not lead (in a library's own
state, say). Code that is not the agent's (builtins, the standard library, packages,
tools) is taken to change only what it is given or what it keeps itself; a value the
namespace shares with such code is not private, and is checked after every step.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import gc
import types
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Reach", "UserCode", "code_names", "plain_executor", "reach_of", "user_code"]

# Names through which code reaches a namespace, a frame or the builtins by other means
# than a variable's name.
REFLECTIVE = frozenset(
    {
        "exec",
        "eval",
        "compile",
        "globals",
        "locals",
        "vars",
        "__import__",
        "breakpoint",
        "__builtins__",
        "__globals__",
        "__dict__",
        "__closure__",
        "__code__",
        "__getattribute__",
        "__self__",
        "cell_contents",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "gi_frame",
        "cr_frame",
        "ag_frame",
        "tb_frame",
        "attrgetter",
        "methodcaller",
    }
)
# Modules whose functions reach namespaces, frames or any object.
REFLECTIVE_MODULES = frozenset(
    {
        "__main__",
        "builtins",
        "cloudpickle",
        "code",
        "codeop",
        "copyreg",
        "ctypes",
        "dill",
        "gc",
        "importlib",
        "inspect",
        "marshal",
        "pickle",
        "runpy",
        "shelve",
        "sys",
        "traceback",
    }
)
_BODIES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_BY_NAME = frozenset({"getattr", "hasattr", "setattr", "delattr"})


@dataclass(frozen=True)
class Reach:
    """What a piece of code can touch: ``names`` it uses (reads, writes, deletes,
    imports, defines), ``bodies`` the names its functions, lambdas and classes use
    (they may run in later steps), whether it is ``dynamic``, and whether it calls
    something other than a name or an attribute of one (``hidden_calls``)."""

    names: frozenset[str]
    bodies: frozenset[str]
    dynamic: bool
    hidden_calls: bool = False


DYNAMIC = Reach(frozenset(), frozenset(), True)


def _bound_names(node: ast.AST) -> Iterator[str]:
    """The names a statement binds without an ``ast.Name``."""
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        yield from node.names
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield node.name
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            yield alias.asname or alias.name.split(".")[0]
    elif (isinstance(node, ast.ExceptHandler) and node.name) or (
        isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name
    ):
        yield node.name
    elif isinstance(node, ast.MatchMapping) and node.rest:
        yield node.rest


def _is_dynamic(node: ast.AST) -> bool:
    """Whether this node reaches variables other than by their names."""
    if isinstance(node, ast.Name):
        return node.id in REFLECTIVE
    if isinstance(node, ast.Attribute):
        return node.attr in REFLECTIVE
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in REFLECTIVE
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] in REFLECTIVE_MODULES for a in node.names)
    if isinstance(node, ast.ImportFrom):
        module = (node.module or "").split(".")[0]
        return module in REFLECTIVE_MODULES or any(a.name == "*" for a in node.names)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _BY_NAME:
        attr = node.args[1] if len(node.args) > 1 else None  # a computed name is dynamic
        return not (isinstance(attr, ast.Constant) and isinstance(attr.value, str))
    return False


def _resolvable(call: ast.Call) -> bool:
    """A call of a name or of an attribute chain on a name (``f(x)``, ``obj.m()``,
    ``np.linalg.norm(v)``)."""
    func = call.func
    while isinstance(func, ast.Attribute):
        func = func.value
    return isinstance(func, ast.Name)


def _names(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.arg):
            found.add(node.arg)
        else:
            found.update(_bound_names(node))
    return found


@functools.lru_cache(maxsize=512)
def reach_of(code: str) -> Reach:
    """What ``code`` can touch (cached: an agent loop often runs the same code).

    >>> r = reach_of("total = sum(values) + x")
    >>> sorted(r.names), r.dynamic
    (['sum', 'total', 'values', 'x'], False)
    >>> reach_of("exec(src)").dynamic, reach_of("handlers[0]()").hidden_calls
    (True, True)
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return DYNAMIC
    bodies: set[str] = set()
    hidden = False
    for node in ast.walk(tree):
        if _is_dynamic(node):
            return DYNAMIC
        if isinstance(node, _BODIES):
            bodies.update(_names(node.body if isinstance(node, ast.Lambda) else node))
        elif isinstance(node, ast.Call) and not hidden:
            hidden = not _resolvable(node)
    return Reach(frozenset(_names(tree)), frozenset(bodies), False, hidden)


def code_names(code: types.CodeType) -> frozenset[str]:
    """Every global and attribute name a compiled function (and the functions and
    classes inside it) uses: a superset of the variables it can look up."""
    found: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        found.update(current.co_names)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return frozenset(found)


@dataclass
class UserCode:
    """The code that can look names up in one namespace: the names it uses, whether
    any of it is dynamic, and the function objects already read (kept, so their ids
    stay theirs)."""

    names: set[str]
    dynamic: bool = False
    seen: dict[int, object] | None = None

    def add(self, reach: Reach) -> None:
        self.names.update(reach.bodies)
        self.dynamic = self.dynamic or reach.dynamic

    def scan(self, values: Iterable[object], namespace: object) -> None:
        """Read the functions and classes among ``values`` whose code looks names up in
        ``namespace`` (its own, or the agent's interpreter's)."""
        seen = self.seen if self.seen is not None else {}
        self.seen = seen
        for value in values:
            if not isinstance(value, (types.FunctionType, types.MethodType, type)):
                continue
            if id(value) in seen:
                continue
            if len(seen) > 50_000:
                seen.clear()
            seen[id(value)] = value
            for function in _functions_of(value):
                self._read(function, namespace)

    def search(self, values: Iterable[object], namespace: object, budget: int) -> bool:
        """Read the functions kept inside ``values`` (in containers, attributes,
        closures) that look names up in ``namespace``; False when the search would
        visit more than ``budget`` objects (the caller then assumes the worst)."""
        stack, visited = list(values), set()
        while stack:
            obj = stack.pop()
            kind = type(obj)
            if kind in _LEAVES or id(obj) in visited:
                continue
            visited.add(id(obj))
            if len(visited) > budget or (kind in _SIZED and len(obj) > budget):  # type: ignore[arg-type]
                return False
            if isinstance(obj, (types.FunctionType, types.MethodType, type)):
                self.scan((obj,), namespace)
                function = getattr(obj, "__func__", obj)
                if getattr(function, "__source__", None) is None:  # not the interpreter's
                    stack.extend(_kept_by(function))
            elif not isinstance(obj, _OPAQUE):
                stack.extend(gc.get_referents(obj))
        return True

    def _read(self, function: types.FunctionType, namespace: object) -> None:
        source = getattr(function, "__source__", None)
        if isinstance(source, str):  # made by the agent's interpreter from its code
            reach = reach_of(source)
            self.names.update(reach.names)
            self.dynamic = self.dynamic or reach.dynamic
        elif function.__globals__ is namespace:
            names = code_names(function.__code__)
            self.names.update(names)
            self.dynamic = self.dynamic or not REFLECTIVE.isdisjoint(names)


_LEAVES = frozenset({int, float, complex, bool, str, bytes, bytearray, type(None), range})
_SIZED = frozenset({list, tuple, dict, set, frozenset})
_OPAQUE = (types.ModuleType, types.CodeType, ast.AST)  # not searched through


def _kept_by(function: Any) -> list[object]:
    """What a function keeps besides its code and globals: closure cells' contents,
    defaults, attributes (a class: nothing more, its methods were read)."""
    if not isinstance(function, types.FunctionType):
        return []
    kept: list[object] = [function.__defaults__, function.__kwdefaults__, function.__dict__]
    for cell in function.__closure__ or ():
        with contextlib.suppress(ValueError):  # an empty cell
            kept.append(cell.cell_contents)
    return kept


def _functions_of(value: Any) -> Iterator[types.FunctionType]:
    if isinstance(value, types.MethodType):
        value = value.__func__
    if isinstance(value, types.FunctionType):
        yield value
        return
    for cls in getattr(value, "__mro__", ()):
        if cls is object:
            continue
        for member in list(vars(cls).values()):
            member = getattr(member, "__func__", member)
            accessors = (member.fget, member.fset) if isinstance(member, property) else (member,)
            yield from (f for f in accessors if isinstance(f, types.FunctionType))


# The user code of each namespace seen, by the id of the namespace (or of the object
# that owns it), across runs: a namespace reused by a later run keeps what its earlier
# runs defined. An id reused by another namespace only makes that one more cautious.
_USER_CODE_LIMIT = 64
_user_code: OrderedDict[int, UserCode] = OrderedDict()


def user_code(owner: object) -> UserCode:
    """The user code known for the namespace ``owner`` stands for."""
    key = id(owner)
    found = _user_code.get(key)
    if found is None:
        found = _user_code[key] = UserCode(set())
        if len(_user_code) > _USER_CODE_LIMIT:
            _user_code.popitem(last=False)
    else:
        _user_code.move_to_end(key)
    return found


def plain_executor(func: Any, param: str | None) -> bool:
    """Whether ``func`` only hands its namespace parameter to ``exec``/``eval``, tests
    names in it, or returns one of its values: then what changes in the namespace
    during a call is the code's doing. A function whose source cannot be read is not
    plain."""
    if param is None:
        return False
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError, ValueError):
        return False
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    uses = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == param]
    return all(_plain_use(use, parents) for use in uses)


def _plain_use(use: ast.Name, parents: dict[int, ast.AST]) -> bool:
    parent = parents.get(id(use))
    if isinstance(parent, ast.Call):
        func = parent.func
        return isinstance(func, ast.Name) and func.id in ("exec", "eval") and use in parent.args[1:]
    if isinstance(parent, ast.Compare):
        return all(isinstance(op, (ast.In, ast.NotIn)) for op in parent.ops)
    # ``return namespace.get("result")`` / ``return namespace["result"]``
    read = parent
    if isinstance(parent, ast.Attribute) and parent.attr == "get":
        read = parents.get(id(parent))
        if not isinstance(read, ast.Call) or read.func is not parent:
            return False
    elif not (isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Load)):
        return False
    return isinstance(parents.get(id(read)), ast.Return)
