"""Identifiers of the Python standard library, labelled by what they name.

A real data set present on every machine that runs Python (the design's default
corpus): the standard library's own source is parsed with :mod:`ast` and every name
is labelled ``class``, ``function``, ``argument``, ``constant`` or ``module``. Class
names are CamelCase and constants UPPER_CASE, but functions, arguments and modules
are all lower_snake_case and differ only in their vocabulary (``get_``, ``is_``,
``_path``...), so a character classifier has real work to do, and a conditioned
generator has to learn each kind's style.
"""

from __future__ import annotations

import ast
import random
import sysconfig
import warnings
from pathlib import Path

from ..errors import DataError

KINDS = ("class", "function", "argument", "constant", "module")


def _collect(tree: ast.Module, found: dict[str, set[str]]) -> None:
    for node in tree.body:  # module-level constants
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.isupper() and len(target.id) > 1:
                    found["constant"].add(target.id)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            found["class"].add(node.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not node.name.startswith("__"):
                found["function"].add(node.name)
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None and arg.arg not in ("self", "cls"):
                    found["argument"].add(arg.arg)


def stdlib_identifiers(max_files: int = 400, root: str | Path | None = None) -> dict[str, list[str]]:
    """Identifiers by kind from the first ``max_files`` modules (sorted by path, tests
    and site-packages excluded) of the standard library at ``root`` (default: this
    Python's). A name found under two kinds is dropped from both, so labels are
    unambiguous. Deterministic for a given Python installation."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DataError(f"{root}: standard library directory not found")
    skip = {"test", "tests", "site-packages", "dist-packages", "idle_test", "__pycache__"}
    files = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))
    found: dict[str, set[str]] = {k: set() for k in KINDS}
    used = 0
    for path in files:
        if used >= max_files:
            break
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # old escape sequences in some modules
                tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few stdlib files are deliberately invalid (test data, templates)
        used += 1
        found["module"].add(path.stem if path.stem != "__init__" else path.parent.name)
        _collect(tree, found)
    if not used:
        raise DataError(f"{root}: no parsable Python files")
    counts: dict[str, int] = {}
    for names in found.values():
        for n in names:
            counts[n] = counts.get(n, 0) + 1
    return {k: sorted(n for n in found[k] if counts[n] == 1) for k in KINDS}


def identifier_dataset(seed: int = 0, max_files: int = 400, per_kind: int | None = 2000) -> tuple[list[str], list[str]]:
    """(names, kinds) shuffled by ``seed``, at most ``per_kind`` names of each kind."""
    r = random.Random(seed)
    names, labels = [], []
    for kind, items in stdlib_identifiers(max_files).items():
        items = list(items)
        r.shuffle(items)
        for n in items[:per_kind]:
            names.append(n)
            labels.append(kind)
    order = list(range(len(names)))
    r.shuffle(order)
    return [names[i] for i in order], [labels[i] for i in order]
