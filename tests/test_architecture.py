"""The layers of ``src/codetape`` as the design draws them, checked on the source.

Dependencies point one way: schemas ← store ← tracer → sandbox; replayer → tracer,
sandbox, store; integrations → tracer, sandbox; viewer and server → store, replayer;
cli → all.
Every package may use ``schemas``, ``errors`` and the top-level leaf modules. No
package imports another package's ``_private`` module: it uses the other package's
``__init__`` or its ``internal`` module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "codetape"

# Which packages each package may import (besides itself and the shared leaves).
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "store": {"schemas"},
    "sandbox": {"schemas"},
    "tracer": {"schemas", "store", "sandbox"},
    "replayer": {"schemas", "store", "sandbox", "tracer"},
    "integrations": {"schemas", "sandbox", "tracer"},
    "testing": {"schemas", "store", "sandbox", "tracer"},
    "viewer": {"schemas", "store", "replayer"},
    "server": {"schemas", "store", "replayer"},
    "cli": {
        "schemas",
        "store",
        "sandbox",
        "tracer",
        "replayer",
        "viewer",
        "integrations",
        "server",
    },
}
# Top-level modules every package may import: they import no package but schemas.
LEAVES = {"errors", "_format", "_lazy", "_version"}
MAX_FUNCTION_LINES = 60


def _modules() -> list[tuple[Path, str]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((path, ".".join(("codetape", *parts))))
    return found


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """Absolute names of the codetape modules ``module`` imports, with line numbers."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, a.name) for a in node.names if a.name.startswith("codetape")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("codetape"):
                target = node.module
            else:
                continue
            names.append((node.lineno, target))
            # ``from . import _widgets`` imports a module by name.
            names += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return names


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_module(name: str) -> bool:
    parts = name.split(".")[1:]
    return (SRC.joinpath(*parts).with_suffix(".py")).exists() or SRC.joinpath(*parts).is_dir()


def test_imports_follow_the_layers() -> None:
    wrong = []
    for path, module in _modules():
        here = _package(module)
        if here not in ALLOWED:  # top-level modules: the facade, the leaves
            if module.split(".")[-1] in LEAVES:
                for line, target in _imports(path, module):
                    if _package(target) not in ("schemas", "") and _is_module(target):
                        wrong.append(f"{module}:{line} (a leaf) imports {target}")
            continue
        for line, target in _imports(path, module):
            there = _package(target)
            if not _is_module(target) or there in (here, "") or there in LEAVES:
                continue
            if there not in ALLOWED[here]:
                wrong.append(f"{module}:{line} imports {target} ({here} may not use {there})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_package_imports_another_packages_private_modules() -> None:
    wrong = []
    for path, module in _modules():
        here = _package(module)
        for line, target in _imports(path, module):
            parts = target.split(".")
            if len(parts) < 3 or parts[1] == here or not _is_module(target):
                continue
            if any(part.startswith("_") for part in parts[2:]):
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "imports of another package's private modules:\n" + "\n".join(wrong)


def test_the_runner_imports_nothing_of_codetape() -> None:
    runner = SRC / "sandbox" / "_runner.py"
    assert not _imports(runner, "codetape.sandbox._runner")


@pytest.mark.parametrize(("path", "module"), _modules(), ids=lambda v: str(v))
def test_functions_are_short(path: Path, module: str) -> None:
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The import walker resolves relative imports the way Python does."""
    pkg = tmp_path / "mod.py"
    pkg.write_text("from ..tracer._state import State\nfrom . import _widgets\n")
    assert _imports(pkg, "codetape.viewer.mod") == [
        (1, "codetape.tracer._state"),
        (1, "codetape.tracer._state.State"),
        (2, "codetape.viewer"),
        (2, "codetape.viewer._widgets"),
    ]
