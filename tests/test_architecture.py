"""The package's layering, read from its own imports: no import cycle between files (function-level
imports count), and family names stay out of the shared layers' switch sites."""

from __future__ import annotations

import ast
import re
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


_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def _names_in_code(path: Path) -> set[str]:
    """The names a file uses in code: identifiers, attributes, imported modules and string
    constants that are names (no spaces), split into words (``DHLiveGenerator``: dh, live,
    generator) and given as every run of up to three joined words (dhlive, livegenerator, ...),
    lower case. Docstrings, comments and prose strings (help texts) are not code."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, ast.Attribute):
            names.append(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.alias):
            names.append(node.name)
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings and " " not in node.value.strip():
            names.append(node.value)
    runs = set()
    for name in names:
        words = [word.lower() for word in _WORD.findall(name)]
        runs |= {"".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, min(i + 4, len(words) + 1))}
    return runs


def _family_word(family: str) -> str:
    return family.replace("_", "").lower()


def test_the_name_scan_reads_code_not_prose(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""DINet in a docstring."""\n# dinet in a comment\nHELP = "DINet in a help text"\n'
                      'from talkrt.models.gpt_sovits import model\nROLE = "hubert-asr"\nclass DHLiveGenerator: ...\nWav2LipMel = 1\n')
    names = _names_in_code(sample)
    assert {"hubert", "dhlive", "wav2lip", "gptsovits"} <= names
    assert "dinet" not in names and "vits" not in names  # prose does not count, nor "vits" inside "sovits"


def test_each_family_is_named_in_at_most_three_files_outside_its_package() -> None:
    """A new family costs one folder: the shared layers reach families through the registry, so
    a family's name appears in code outside its package only in the registry and in the few
    files that use it as a shared feature type or build on it downward."""
    from talkrt.models.registry import FAMILIES

    names = {path: _names_in_code(path) for path in PACKAGE.rglob("*.py")}
    for family in FAMILIES:
        package = PACKAGE / "models" / family
        outside = sorted(str(path.relative_to(PACKAGE)) for path, words in names.items() if package not in path.parents and _family_word(family) in words)
        assert "models/registry.py" in outside
        assert len(outside) <= 3, (family, outside)


def test_the_command_line_stays_thin() -> None:
    """The CLI parses, calls the library and prints: under 450 lines in all."""
    lines = sum(len(path.read_text().splitlines()) for path in (PACKAGE / "cli").rglob("*.py"))
    assert 100 < lines < 450, lines
