"""The import rules of DESIGN.md ("an upper layer imports only lower ones"), read from the
source with ``ast`` (every import statement, also those inside functions): the trainer knows
no model, cells know no layer above them, a model module knows no trainer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rnnkit

ROOT = Path(rnnkit.__file__).parent
MODEL_MODULES = ["attention", "charlm", "classifier", "forecaster", "generator", "metrics", "seq2seq", "tagger",
                 "_common"]


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """The absolute names of everything ``path`` imports; ``from .. import a`` counts as
    ``rnnkit.a`` (a submodule or a name of the package)."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {n for n in names if n == "rnnkit" or n.startswith("rnnkit.")}


def _files(*parts: str) -> list[Path]:
    where = ROOT.joinpath(*parts)
    return sorted(where.rglob("*.py")) if where.is_dir() else [where]


def _violations(files: list[Path], forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    bad = []
    for f in files:
        for name in sorted(imported_modules(f, root)):
            if any(name == p or name.startswith(p + ".") for p in forbidden):
                bad.append(f"{f.relative_to(root.parent).as_posix()} imports {name}")
    return bad


def test_the_import_reader_resolves_relative_imports():
    """The checker itself: relative imports at each level resolve to the absolute names."""
    probe = ROOT / "train" / "rundir.py"
    names = imported_modules(probe)
    assert "rnnkit.checkpoint.atomic_file" in names and "rnnkit.train.config.TrainConfig" in names
    assert "rnnkit.models.charlm.CharLM" not in names


@pytest.mark.parametrize("layer, forbidden", [
    ("train", ("rnnkit.models", "rnnkit.tasks", "rnnkit.cli", "rnnkit.diagnostics", "rnnkit.__version__")),
    ("cells", ("rnnkit.layers", "rnnkit.models", "rnnkit.train", "rnnkit.tasks", "rnnkit.cli",
               "rnnkit.__version__")),
    ("diagnostics", ("rnnkit.cli", "rnnkit.__version__")),
    ("data", ("rnnkit.models", "rnnkit.train", "rnnkit.tasks", "rnnkit.cli", "rnnkit.diagnostics")),
    ("cli", ("rnnkit.__version__",)),
])
def test_a_layer_imports_only_layers_below_it(layer, forbidden):
    assert _violations(_files(layer), forbidden) == []


@pytest.mark.parametrize("module", MODEL_MODULES)
def test_a_model_module_imports_no_trainer_and_no_application(module):
    """The model is an nn.Module over layers; its training (``<model>_app.py``) lives next to it."""
    assert _violations(_files("models", f"{module}.py"),
                       ("rnnkit.train", "rnnkit.tasks", "rnnkit.cli", "rnnkit.diagnostics")) == []


def test_nothing_below_the_cli_imports_the_cli():
    """(``rnnkit.bench`` is a tool beside the CLI: its grid runs the commands.)"""
    top = ("cli", "bench", "__main__.py")
    files = [f for f in ROOT.rglob("*.py") if f.relative_to(ROOT).parts[0] not in top]
    assert _violations(files, ("rnnkit.cli",)) == []


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """A file with an upward import (also one inside a function) is reported."""
    root = tmp_path / "rnnkit"
    (root / "train").mkdir(parents=True)
    fake = root / "train" / "probe.py"
    fake.write_text("import torch\n\ndef f():\n    from ..models.charlm import CharLM\n    return CharLM\n",
                    encoding="utf-8")
    assert _violations([fake], ("rnnkit.models",), root) == [
        "rnnkit/train/probe.py imports rnnkit.models.charlm.CharLM"]


def test_rnnkit_train_is_a_plain_function_and_its_package_still_imports():
    import sys
    import types

    from rnnkit.train import TrainConfig

    assert isinstance(rnnkit.train, types.FunctionType) and rnnkit.train.__module__ == "rnnkit.models.charlm_app"
    assert type(sys.modules["rnnkit.train"]) is types.ModuleType  # no callable-package class
    assert sys.modules["rnnkit.train"].TrainConfig is TrainConfig
    assert rnnkit.__version__ == sys.modules["rnnkit._version"].__version__
