"""The import direction of tether's modules (issue #14): the layer table, asserted.

Every ``import tether.X`` / ``from tether.X import`` of every module counts, including the
ones under ``if TYPE_CHECKING:`` and inside functions: a module imports only modules of
its own layer or of a lower one, no two modules import each other in a circle, and
nothing outside ``store/`` imports the store's private modules (``tether.store._*``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "tether"

#: Bottom to top. A module belongs to the first entry that is its name or a package above it.
LAYERS: list[list[str]] = [
    # 0 the kernel: data and pure rules, no I/O, imports nothing of tether
    ["_core"],
    # 1 support: leaves built on the standard library
    ["_errors", "_clock", "_runtime", "_settings", "_interrupt", "_loop", "_mailbox", "_shield", "_values",
     "_annotations", "_reaping", "_deployment_context", "_runtime_env", "_state_helpers", "_connections",
     "_known_secrets"],
    # 2 services the engine and its users share
    ["_context", "_options", "_arguments", "_futures", "_logging", "_limits", "_resolving", "_run_names", "_async_dispatch"],
    # 3 the run store: a recorder plus queries
    ["store"],
    # 4 resources, caching and store-backed slots
    ["_resources", "_stand_in", "_cache", "_leases", "_validation", "_cache_policies", "_run_views"],
    # 5 where bodies run: runner contracts, runners, the worker side and the wire
    ["runners"],
    # 6 the engine: the flow side
    ["_engine"],
    # 7 the veneer: decorators, Prefect 1 graphs, run views, deployments, public namespaces
    ["_flow", "_task", "_graph", "_deployment", "_serve", "_serve_child",
     "_serve_display", "schedules", "cache_policies", "client", "concurrency", "context", "deployments",
     "exceptions", "flows", "futures", "limits", "logging", "resources", "runtime", "sql", "states",
     "task_runners", "tasks", "testing", "utilities", "variables", "artifacts", "blocks", "transactions"],
    # 8 applications: the command line, the dashboard, the live view, the package's face
    ["cli", "_cli_serve", "_cli_ui", "ui", "_progress", "__init__"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py")) if "migrations" not in p.parts}


def layer_of(module: str) -> int:
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        prefix = ".".join(parts[:depth])
        for index, names in enumerate(LAYERS):
            if prefix in names:
                return index
    raise AssertionError(f"module tether.{module} has no layer: add it to LAYERS in {__file__}")


def imports_of(module: str) -> list[tuple[str, int]]:
    """The tether modules ``module`` imports (relative to the package), with their lines."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    if module == "__init__":
        package = []
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                prefix = ".".join(["tether", *base] + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}".removeprefix("tether.") in MODULES else prefix
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target != "tether" and not target.startswith("tether."):
                continue
            name = target.removeprefix("tether").removeprefix(".") or "__init__"
            while name not in MODULES and "." in name:
                name = name.rpartition(".")[0]
            if name in MODULES and name != module:
                found.append((name, node.lineno))
    return found


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layer_table(module):
    mine = layer_of(module)
    upward = [f"tether.{target} (layer {layer_of(target)}) at line {line}"
              for target, line in imports_of(module) if layer_of(target) > mine]
    assert not upward, f"tether.{module} (layer {mine}) imports a higher layer: " + "; ".join(upward)


def test_no_import_cycles():
    graph = {m: {t for t, _ in imports_of(m)} for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles, "modules importing each other in a circle: " + " | ".join(", ".join(c) for c in cycles)


def test_only_the_store_imports_its_private_modules():
    reaching_in = [f"tether.{m} imports tether.{t} at line {line}" for m in MODULES if not m.startswith("store")
                   for t, line in imports_of(m) if t.startswith("store._")]
    assert not reaching_in, "use the store's face (tether.store): " + "; ".join(reaching_in)
