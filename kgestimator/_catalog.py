"""The registries' entries and one-line summaries, read from the source without importing it.

``kgestimator list`` shows the models, samplers and losses. Importing the
registries would import torch and scikit-learn (seconds); reading the dict
literals and the class docstrings with :mod:`ast` takes milliseconds.
``tests/test_cli.py`` checks that this reading agrees with the imported
registries, so a registry written in another form fails there, not silently.
"""

import ast
import importlib
from pathlib import Path

_ROOT = Path(__file__).resolve().parent


def _first_line(doc):
    lines = (doc or "").strip().splitlines()
    return lines[0].replace("``", "") if lines else ""


def _module_file(module):
    """The source file of ``module``, a dotted path inside kgestimator ('models', 'samplers._uniform')."""
    path = _ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _parse(module):
    return ast.parse(_module_file(module).read_text(encoding="utf-8"))


def _package_of(module):
    return module if _module_file(module).name == "__init__.py" else module.rpartition(".")[0]


def _summary(module, name):
    """``(class name or None, first docstring line)`` of the class or function ``name`` as seen
    from ``module`` (following ``from .x import``)."""
    tree = _parse(module)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return name, _first_line(ast.get_docstring(node))
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return None, _first_line(ast.get_docstring(node))
        if isinstance(node, ast.ImportFrom) and node.level == 1 and any(
                (alias.asname or alias.name) == name for alias in node.names):
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            return _summary(f"{_package_of(module)}.{node.module}", original)
    raise LookupError(f"{name} not found from kgestimator.{module}")


def _dict_literal(tree, name):
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name
                and isinstance(node.value, ast.Dict)):
            return node.value
    raise LookupError(f"no dict literal {name}")


def registry(module, name):
    """``{key: (class name or None, summary)}`` of the dict ``name`` in ``kgestimator.<module>``.

    Values may be string literals (their own summary), classes or functions
    (the first line of their docstring; functions have no class name);
    ``**OTHER`` merges another dict of the module.
    """
    tree = _parse(module)
    entries = {}

    def walk(node):
        for key, value in zip(node.keys, node.values):
            if key is None and isinstance(value, ast.Name):  # {**OTHER, ...}
                walk(_dict_literal(tree, value.id))
            elif isinstance(value, ast.Name):
                entries[ast.literal_eval(key)] = _summary(module, value.id)
            else:
                entries[ast.literal_eval(key)] = (None, ast.literal_eval(value))

    walk(_dict_literal(tree, name))
    return entries


def imported_registry(module, name):
    """The same as :func:`registry`, from the imported registry (slow: imports torch)."""
    entries = getattr(importlib.import_module(f"kgestimator.{module}"), name)
    return {key: (value.__name__ if isinstance(value, type) else None, _first_line(value.__doc__))
            if callable(value) else (None, value) for key, value in entries.items()}


def entries(module, name):
    """:func:`registry`, or :func:`imported_registry` where the source cannot be read (a .pyc-only install)."""
    try:
        return registry(module, name)
    except (OSError, LookupError, SyntaxError, ValueError):
        return imported_registry(module, name)


#: (section title, module, dict name) of each registry that ``kgestimator list`` shows
SECTIONS = (
    ("models (--model)", "models", "MODELS"),
    ("samplers (--sampler)", "samplers", "SAMPLERS"),
    ("losses (--loss)", "losses", "LOSSES"),
)
