"""The package's shape: each module imports only modules of its own layer or below, and nothing imports in a
cycle. Lazy imports inside functions count too (they hide a dependency, they do not remove it)."""

from __future__ import annotations

import ast
from pathlib import Path

import srkit

SRC = Path(srkit.__file__).parent

# Bottom to top. A module may import its own layer or lower ones. `srkit` itself (the public API and
# __version__) is the package, imported by everything already, and so not a dependency edge.
LAYERS: list[set[str]] = [
    {"ops", "fs", "paths", "device", "shard", "data"},  # data: the package (its __init__ imports nothing)
    {"image_io", "metrics", "archs", "data.degradations", "data.catalog"},
    {
        "config",
        "losses",
        "models",
        "community",
        "data.faces",
        "data.lowres",
        "data.sources",
        "data.datasets",
        "data.augment",
    },
    {"data.prepare", "data.download", "data.pipeline", "evaluate", "inference", "export", "descriptor", "interpolate"},
    {"tune"},  # measures runtimes through descriptor and inference
    {"face_upscale", "summary", "viz", "compare", "train"},
    {"batch", "report", "demo"},
    {"serve"},
    {"cli", "__main__"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    """The layer of a dotted module name below srkit (a package's layer covers its submodules)."""
    for depth in range(module.count(".") + 1, 0, -1):
        prefix = ".".join(module.split(".")[:depth])
        for i, layer in enumerate(LAYERS):
            if prefix in layer:
                return i
    raise AssertionError(f"srkit.{module} is in no layer of tests/test_layers.py: add it where it belongs")


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        name = _module_name(path)
        if not name:
            continue  # srkit/__init__.py: the public API sits on top of everything
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("srkit."):
                found.add(node.module.removeprefix("srkit."))
            elif isinstance(node, ast.ImportFrom) and node.module == "srkit":
                found |= {a.name for a in node.names if a.name != "__version__"}
            elif isinstance(node, ast.Import):
                found |= {a.name.removeprefix("srkit.") for a in node.names if a.name.startswith("srkit.")}
        graph[name] = found - {name}
    return graph


def test_every_module_has_a_layer() -> None:
    for name in _imports():
        _layer(name)


def test_no_module_imports_a_layer_above_it() -> None:
    upward = [
        f"srkit.{mod} (layer {_layer(mod)}) imports srkit.{dep} (layer {_layer(dep)})"
        for mod, deps in _imports().items()
        for dep in sorted(deps)
        if _layer(dep) > _layer(mod)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    graph = _imports()
    # Edges to a package mean its __init__; edges into a package's own submodules stay inside it.
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep.startswith(node + "."):
                continue  # a package importing its submodules (archs/__init__ -> archs.srresnet)
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep] if dep in stack else [node, dep])
            elif state.get(dep) is None and dep in graph:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
