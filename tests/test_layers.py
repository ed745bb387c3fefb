"""The library's layers, checked over the import graph (every import, at module level or inside
a function): each package imports only packages of lower layers, packages on one layer do not
import each other, nothing outside ``cli/`` imports the CLI, argparse or a terminal library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "trtflow"

# top to bottom; packages on one line are independent of each other
LAYERS = [
    ["cli"],
    ["video", "serve", "integrations", "tune"],
    ["tasks"],
    ["edits", "export"],
    ["compare", "bench"],
    ["backends"],
    ["graph"],
    ["vision"],
    ["<core>"],  # errors, spec, arrays, feeds, deps, cache_dir, progress, capture
]
RANK = {pkg: i for i, row in enumerate(LAYERS) for pkg in row}
CLI_ONLY = {"argparse", "rich", "tqdm", "click"}
FACADES = {"trtflow/__init__.py", "trtflow/__main__.py"}  # re-export the public API lazily


def _package(module: str) -> str:
    """``trtflow.backends.torch.runner`` -> ``backends``; a top-level module -> ``<core>``."""
    parts = module.split(".")
    if len(parts) < 2:
        return "<core>"
    if (ROOT / parts[1]).is_dir():
        return parts[1]
    return "<core>"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "trtflow":
                found += [(node.lineno, f"trtflow.{a.name}") for a in node.names]
    return found


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).as_posix()
        if rel in FACADES:
            continue
        module = rel[:-3].replace("/", ".").removesuffix(".__init__")
        yield rel, module, path


def test_every_package_has_a_layer():
    for child in ROOT.iterdir():
        if child.is_dir() and (child / "__init__.py").exists():
            assert child.name in RANK, f"trtflow/{child.name}/ is not placed in a layer of tests/test_layers.py"


def test_layers_point_down():
    wrong = []
    for rel, module, path in _modules():
        own = _package(module)
        for line, target in _imports(path):
            if target == "trtflow" or not target.startswith("trtflow."):
                continue
            other = _package(target)
            if other == own:
                continue
            if RANK[other] < RANK[own]:
                wrong.append(f"{rel}:{line} ({own}) imports {target} ({other}, a higher layer)")
            elif RANK[other] == RANK[own]:
                wrong.append(f"{rel}:{line} ({own}) imports {target} ({other}, the same layer)")
    assert not wrong, "\n".join(wrong)


def test_library_never_touches_the_terminal():
    wrong = []
    for rel, module, path in _modules():
        if _package(module) == "cli":
            continue
        for line, target in _imports(path):
            if target.split(".")[0] in CLI_ONLY or target.startswith("trtflow.cli"):
                wrong.append(f"{rel}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


def _module_graph(prefix: str) -> dict[str, set[str]]:
    mods = {module: path for _, module, path in _modules()}
    graph: dict[str, set[str]] = {}
    for module, path in mods.items():
        if not module.startswith(prefix):
            continue
        graph[module] = {t for _, t in _imports(path) if t in mods and t != module and t.startswith(prefix)}
    return graph


@pytest.mark.parametrize("package", ["trtflow.backends", "trtflow.edits", "trtflow.graph", "trtflow.export",
                                     "trtflow.vision", "trtflow.compare", "trtflow.bench", "trtflow.video",
                                     "trtflow.serve", "trtflow.tasks", "trtflow.tune"])
def test_no_import_cycles_between_modules(package):
    graph = _module_graph(package + ".")
    # a package's __init__ may re-export its modules lazily: leave it out of the cycle check
    graph = {m: {t for t in deps if not (ROOT.parent / (t.replace('.', '/') + '/__init__.py')).exists()}
             for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))
