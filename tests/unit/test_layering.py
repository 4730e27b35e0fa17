"""Dependencies point one way: system -> boot -> hw -> block (docs/architecture.md).

Every module's imports are read with ``ast``; an import of a higher layer, or
of unicorn/threading/time from hw, fails the test.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAYERS = ["block", "hw", "boot", "system"]          # lowest first
RANK = {name: i for i, name in enumerate(LAYERS)}
FORBIDDEN = {
    "block": {"unicorn"},
    "hw": {"unicorn", "threading", "time"},
}


def imports_of(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def modules():
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            yield layer, path
    for path in sorted((ROOT / "util").glob("*.py")):
        yield "root", path


@pytest.mark.parametrize("layer,path", list(modules()), ids=lambda v: str(v).rsplit("/", 2)[-1])
def test_imports_point_down(layer, path):
    for name in imports_of(path):
        parts = name.split(".")
        top = parts[0]
        if layer == "root":
            assert top != "drivebay" or parts[1] in ("errors", "trace"), \
                f"{path}: package-root module imports {name}"
            continue
        assert top not in FORBIDDEN.get(layer, ()), f"{path}: {layer}/ must not import {name}"
        if top == "drivebay" and len(parts) > 1 and parts[1] in RANK:
            assert RANK[parts[1]] <= RANK[layer], f"{path}: {layer}/ imports upward: {name}"
