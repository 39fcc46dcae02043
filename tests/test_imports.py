"""The dependency arrows, checked: each room imports only what docs/architecture.md says it may, and no
module of the product imports itself through others.

Every import counts, at the top of a module, under ``if TYPE_CHECKING:`` or inside a function (a lazy
import is still an arrow). A broken rule is reported with the file and line that breaks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> import name
ROOMS = {"protos": "contract", "runtime": "runtime", "server": "server", "router": "router", "client": "client",
         "local": "local", "search": "search"}
# room -> imports it must never make (ringserve rooms by short name, or third-party top-level modules)
FORBIDDEN = {
    "contract": {"runtime", "server", "router", "client", "local", "torch", "torchvision", "redis"},
    "runtime": {"server", "router", "client", "local", "search", "torch", "torchvision"},
    "search": {"server", "router", "client", "local", "torch", "torchvision"},
    "server": {"router", "client", "local", "search"},
    "router": {"server", "client", "local", "torch", "torchvision"},
    "client": {"runtime", "server", "router", "local", "search", "torch", "torchvision", "redis"},
    "local": {"torch", "torchvision"},
}


def imports_of(source: str) -> list[tuple[int, str]]:
    """(line, what) for every import: ``ringserve.<room>`` as the room's name, anything else by its top module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            found.append((node.lineno, parts[1] if parts[0] == "ringserve" and len(parts) > 1 else parts[0]))
    return found


def violations() -> list[str]:
    broken = []
    for folder, room in ROOMS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            for line, what in imports_of(path.read_text()):
                if what in FORBIDDEN[room]:
                    broken.append(f"{path.relative_to(ROOT)}:{line}: {room} imports {what}")
    return broken


def test_every_room_keeps_its_arrows():
    assert violations() == []


def product_modules() -> dict[str, tuple[str, bool, str]]:
    """Every module of the product: dotted name -> (source, is a package, path for messages)."""
    modules = {}
    for folder, room in ROOMS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            package = parts[-1] == "__init__"
            name = ".".join(("ringserve", room, *(parts[:-1] if package else parts)))
            modules[name] = (path.read_text(), package, str(path.relative_to(ROOT)))
    return modules


def module_imports(name: str, source: str, package: bool, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) for every import of a module in ``known``: ``from X import y`` is ``X.y`` when that
    is a module, else ``X``; a name not known is its longest known prefix (a package's ``__init__``)."""

    def known_prefix(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [known_prefix(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                anchor = name.split(".")[: len(name.split(".")) - node.level + package]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else known_prefix(base)
                       for alias in node.names]
        else:
            continue
        found += [(node.lineno, target) for target in dict.fromkeys(targets) if target and target != name]
    return found


def import_cycles(modules: dict[str, tuple[str, bool, str]]) -> list[str]:
    """Each set of modules that import one another in a circle, with the imports that close it."""
    known = set(modules)
    edges = {name: module_imports(name, source, package, known) for name, (source, package, _) in modules.items()}
    graph = {name: {target for _, target in found} for name, found in edges.items()}
    cycles = []
    for group in _strongly_connected(graph):
        if len(group) > 1:
            cycles.append("; ".join(f"{modules[a][2]}:{line}: {a} imports {b}" for a in sorted(group)
                                    for line, b in edges[a] if b in group))
    return cycles


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of ``graph`` (node -> the nodes it points to)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = {stack.pop()}
            while node not in group:
                group.add(stack.pop())
            groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_module_of_the_product_imports_itself_through_others():
    assert import_cycles(product_modules()) == []


def _synthetic(**sources: str) -> dict[str, tuple[str, bool, str]]:
    """A tiny module graph: ``pkg`` is a package, every other name a module in it."""
    return {("ringserve.x" if key == "pkg" else f"ringserve.x.{key}"): (source, key == "pkg", f"{key}.py")
            for key, source in sources.items()}


@pytest.mark.parametrize("sources, cycles", [
    ({"a": "from ringserve.x import b", "b": "import ringserve.x.c", "c": ""}, 0),
    ({"a": "from ringserve.x import b", "b": "from ringserve.x.a import f"}, 1),
    ({"a": "from ringserve.x import b", "b": "import typing\nif typing.TYPE_CHECKING:\n    from ringserve.x import a"}, 1),
    ({"a": "import ringserve.x.b", "b": "def f():\n    from ringserve.x.c import g", "c": "from ringserve.x import a"}, 1),
    ({"a": "from . import b", "b": "from .a import f"}, 1),
    # A package re-exporting its modules is no cycle, unless one of them imports a name from the package.
    ({"pkg": "from ringserve.x.a import f", "a": "from ringserve.x import b", "b": ""}, 0),
    ({"pkg": "from ringserve.x.a import f", "a": "from ringserve.x import g"}, 1),
    ({"a": "from ringserve.x import b", "b": "from ringserve.x import a", "c": "from ringserve.x import d",
      "d": "from ringserve.x import c"}, 2),
])
def test_the_cycle_check_sees_every_kind_of_import(sources, cycles):
    assert len(import_cycles(_synthetic(**sources))) == cycles


@pytest.mark.parametrize("source, expected", [
    ("import torch", [(1, "torch")]),
    ("def f():\n    from ringserve.router.ring import Ring", [(2, "router")]),
    ("from ringserve.contract import codec", [(1, "contract")]),
])
def test_the_checker_sees_top_level_and_lazy_imports(source, expected):
    assert imports_of(source) == expected
