"""The package's shape, read from the source with `ast` (nothing is imported): no import cycle between
napari_fewshot modules (imports inside functions count: a cycle hidden in a function is still a cycle),
no Qt or napari outside napari_fewshot/plugin/, and no Python file over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400
GUI_PACKAGES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy")


def module_name(path: Path, root: Path = ROOT) -> str:
    """napari_fewshot/core/bank.py -> "napari_fewshot.core.bank"; a package's __init__.py -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of napari_fewshot (under `root`) by dotted name."""
    return {module_name(p, root): p for p in sorted((root / "napari_fewshot").rglob("*.py"))}


def imported_names(path: Path, root: Path = ROOT) -> list[str]:
    """Absolute dotted names every import statement of `path` names, at any depth (functions included).
    `from X import a` yields X.a (a submodule, or a name that import_graph maps back to X: importing X.a
    runs the package X's __init__ as any submodule import does, which is not counted as an edge);
    relative imports are resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the napari_fewshot modules it imports (a name that is not a module maps to its module)."""
    modules = package_modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path, root):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_sees_a_cycle_and_a_straight_line():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_relative_imports_inside_functions_are_resolved(tmp_path):
    package = tmp_path / "napari_fewshot" / "evaluation"
    package.mkdir(parents=True)
    source = package / "busi.py"
    source.write_text("def f():\n    from .interactive import g\n    from ..core import run\n")
    assert imported_names(source, tmp_path) == ["napari_fewshot.evaluation.interactive.g", "napari_fewshot.core.run"]


def test_no_import_cycle_between_package_modules():
    graph = import_graph()
    assert "napari_fewshot.evaluation.busi" in graph  # the graph was read at all
    assert cycles(graph) == []


def test_no_qt_or_napari_import_outside_the_plugin():
    offenders = []
    for name, path in package_modules().items():
        if name == "napari_fewshot.plugin" or name.startswith("napari_fewshot.plugin."):
            continue
        for imported in imported_names(path):
            if imported.split(".")[0] in GUI_PACKAGES:
                offenders.append(f"{name} imports {imported}")
    assert offenders == []


def test_no_python_file_over_400_lines():
    files = [p for folder in ("napari_fewshot", "tests", "benchmarks") for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 10
    too_long = {str(p.relative_to(ROOT)): n for p in files
                if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert too_long == {}
