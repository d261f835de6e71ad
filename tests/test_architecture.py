"""The package's layering, read from its own imports: no import cycle between files (function-level
imports count), and family names stay out of the shared layers' switch sites."""

from __future__ import annotations

import ast
from pathlib import Path

import talkrt

PACKAGE = Path(talkrt.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in modules and target != name}
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles by depth-first search: each as the path that closes on itself."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"b"}}) == []


def test_no_import_cycle_between_files() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 100 and graph["talkrt.runtime.renderers"] >= {"talkrt.models.registry"}
    assert not find_cycles(graph)


def test_shared_layers_do_not_import_family_packages() -> None:
    """export, engines, precision and runtime reach a family only through the registry."""
    from talkrt.models.registry import FAMILIES

    modules = _modules()
    offenders = []
    for name, path in modules.items():
        if name.split(".")[1:2] in (["export"], ["engines"], ["precision"], ["runtime"]):
            for target in _imports(name, path, modules):
                if any(target.startswith(f"talkrt.models.{family}") for family in FAMILIES):
                    offenders.append((name, target))
    assert not offenders, offenders
