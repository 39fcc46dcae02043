"""The dependency arrows, checked: each room imports only what docs/architecture.md says it may.

Every import counts, at the top of a module or inside a function (a lazy import is still an
arrow). A broken rule is reported with the file and line that breaks it.
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


@pytest.mark.parametrize("source, expected", [
    ("import torch", [(1, "torch")]),
    ("def f():\n    from ringserve.router.ring import Ring", [(2, "router")]),
    ("from ringserve.contract import codec", [(1, "contract")]),
])
def test_the_checker_sees_top_level_and_lazy_imports(source, expected):
    assert imports_of(source) == expected
