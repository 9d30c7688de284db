"""The packages' import graphs: no circle (module-level or inside a function alike) and no private name taken
from another module, so each module can be read, tested and replaced on its own, and a family on top of the
base never becomes something the base needs."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ip_core", "nodes", "trainer")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules(package: str) -> dict:
    """module name -> (path, is a package's __init__) for every .py file of a top-level package."""
    return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative levels counted from the importing module's package)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: dict) -> list:
    """(imported module, imported names, line) for every import statement anywhere in the file, restricted to
    the modules in `known`. `from pkg import sub` counts as importing pkg.sub when sub is a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.append((alias.name, (), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path, node)
            names = []
            for alias in node.names:
                if f"{target}.{alias.name}" in known:
                    found.append((f"{target}.{alias.name}", (), node.lineno))
                else:
                    names.append(alias.name)
            if target in known and (names or not node.names):
                found.append((target, tuple(names), node.lineno))
    return found


def import_graph(package: str) -> dict:
    known = package_modules(package)
    return {m: {t for t, _, _ in imports_of(m, p, known) if t != m} for m, p in known.items()}


def find_cycle(graph: dict):
    """One import circle as a list of modules [a, b, ..., a], or None (depth-first search, colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_names_the_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_relative_imports_resolve_from_the_importing_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    node = ast.parse("from ..base import x").body[0]
    assert _resolve("pkg.sub.mod", pkg / "sub" / "mod.py", node) == "pkg.base"
    assert _resolve("pkg.sub", pkg / "sub" / "__init__.py", ast.parse("from .mod import y").body[0]) == "pkg.sub.mod"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(package):
    cycle = find_cycle(import_graph(package))
    assert cycle is None, f"import circle in {package}: {' -> '.join(cycle)}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_name_imported_from_another_module(package):
    known = package_modules(package)
    bad = []
    for module, path in known.items():
        for target, names, line in imports_of(module, path, known):
            bad += [f"{path.relative_to(ROOT)}:{line} imports {n} from {target}" for n in names
                    if n.startswith("_") and not n.startswith("__")]
    assert not bad, "private names used across modules (make them public helpers):\n" + "\n".join(bad)


def test_base_modules_never_import_a_family():
    graph = import_graph("ip_core")
    for base in ("ip_core.config", "ip_core.adapter", "ip_core.projection", "ip_core.attention", "ip_core.embeds"):
        reach, todo = set(), [base]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in reach:
                    reach.add(nxt)
                    todo.append(nxt)
        assert not {m for m in reach if m.startswith("ip_core.families")}, f"{base} reaches a family module"
