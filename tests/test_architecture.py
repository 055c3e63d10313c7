"""The package's shape: no import cycle between medauc modules, no module over MAX_LINES lines.

Imports are read with ``ast`` (nothing is imported): module-level imports and those inside
functions both count, since a function-level import only delays a cycle to the first call.
Imports under ``if TYPE_CHECKING:`` never run and do not count; nor do the registry's
``importlib.import_module`` strings (``medauc.stages``), which are data, not imports.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path


SRC = Path(__file__).resolve().parents[1] / "src"
# Modules that each do one job stay readable; "about 400 lines" with a little slack.
MAX_LINES = 420


def module_names(src: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of ``package`` under ``src`` (a package is its __init__.py)."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            else:
                stack.append(child)
    return found


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from a import b`` is ``a.b`` when that is a module)."""
    modules = module_names(src, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: strip (level - 1) packages from this module's package
                    here = name.split(".") if is_pkg else name.split(".")[:-1]
                    here = here[: len(here) - (node.level - 1)]
                    base = ".".join(here + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for target in targets:
                # "import a.b.c" binds a but runs a.b.c: the deepest known module is the dependency
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def find_cycles(graph: dict[str, set[str]], limit: int = 20) -> list[list[str]]:
    """Import cycles as ``[a, b, ..., a]``: one per broken edge, until none is left (at most ``limit``)."""
    graph = {k: set(v) for k, v in graph.items()}
    cycles = []
    while len(cycles) < limit:
        try:
            graphlib.TopologicalSorter(graph).prepare()
            break
        except graphlib.CycleError as exc:
            # graphlib lists the cycle against the edges: each node is a dependency of the next one
            cycle = list(reversed(exc.args[1]))
            cycles.append(cycle)
            graph[cycle[0]].discard(cycle[1])
    return cycles


def test_finds_function_level_and_relative_import_cycles(tmp_path):
    # a -> b at module level, b -> a inside a function, via a relative import: a cycle a reader
    # of module-level imports only (or one that ignores relative imports) would miss.
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .a import x\n    return x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import d\nimport pkg.sub.a\n")
    (pkg / "d.py").write_text("from pkg import c\n")  # d -> c -> d only under TYPE_CHECKING: no cycle
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.sub.a"}
    assert graph["pkg.c"] == {"pkg.sub.a"}
    cycles = find_cycles(graph)
    assert len(cycles) == 1 and set(cycles[0]) == {"pkg.sub.a", "pkg.sub.b"} and cycles[0][0] == cycles[0][-1]
    # the printed order follows the imports: each module imports the next one
    assert all(cycles[0][i + 1] in graph[cycles[0][i]] for i in range(len(cycles[0]) - 1))


def test_no_import_cycle():
    graph = import_graph(SRC, "medauc")
    assert len(graph) > 30 and "medauc.evaluate.delong" in graph
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (each module imports the next):\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_over_max_lines():
    # Run last (the other packages are being split): pytest tests/test_architecture.py -k max_lines
    sizes = {name: len(path.read_text().splitlines()) for name, path in module_names(SRC, "medauc").items()}
    over = {name: n for name, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them along their jobs): " + ", ".join(
        f"{name} ({n})" for name, n in over.items())
