"""The package's shape (ARCHITECTURE.md): short functions and an import graph without circles.

Static checks over the source with ``ast``: they import nothing from kgestimator.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kgestimator"
MAX_LINES = 60


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text(encoding="utf-8"))


def _code_lines(node):
    """Lines of a function without its docstring."""
    lines = node.end_lineno - node.lineno + 1
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        lines -= body[0].end_lineno - body[0].lineno + 1
    return lines


def long_functions(limit=MAX_LINES):
    """``[(module, function, lines)]`` of the functions over ``limit`` lines (docstrings excluded)."""
    found = []
    for name, _, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > limit:
                found.append((name, node.name, _code_lines(node)))
    return found


def _resolve(module, node, package_of):
    if node.level == 0:
        return node.module
    base = package_of.split(".")[: len(package_of.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(local_too=True):
    """``{module: {kgestimator modules it imports}}``; ``local_too`` counts imports inside functions."""
    names = {name: (path, tree) for name, path, tree in _modules()}
    graph = {}
    for name, (path, tree) in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        nodes = ast.walk(tree) if local_too else tree.body
        targets = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom):
                base = _resolve(name, node, package)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in names else base)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
        graph[name] = {t for t in targets if t in names and t != name}
    return graph


def cycles(graph):
    """Every module that lies on an import circle, with one circle through it."""
    found = {}
    for start in graph:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    found[start] = path + [start]
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    return found


def test_no_function_is_longer_than_a_screen():
    assert long_functions() == []


def test_no_import_circle_even_through_function_local_imports():
    assert cycles(import_graph(local_too=True)) == {}


def test_the_checks_see_a_circle_and_a_long_function():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == {"a": ["a", "b", "a"], "b": ["b", "a", "b"]}
    tree = ast.parse("def f():\n    '''doc\n    more'''\n" + "    x = 1\n" * 61)
    assert _code_lines(tree.body[0]) == 62
