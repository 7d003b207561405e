"""The layout's rules: imports run one way along the flow (features → model library → training
pipeline → serving), the model library needs only the numeric stack, and every package's
public names resolve."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Lower layers first; a module may import project modules of its own layer or below.
LAYERS: tuple[str, ...] = ("features", "training.models", "training", "serving")
# What the model library may import besides the standard library and itself.
LIBRARY_DEPENDENCIES = frozenset({"numpy", "pandas", "scipy", "sklearn", "xgboost",
                                  "matplotlib", "threadpoolctl", "numba"})


def layer(module: str) -> int | None:
    """Index in LAYERS of the most specific layer `module` belongs to, None for outsiders."""
    matches = [i for i, name in enumerate(LAYERS)
               if module == name or module.startswith(name + ".")]
    return max(matches, key=lambda i: len(LAYERS[i])) if matches else None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a file, function-local ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from training import models` reaches training.models, not just training
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def violations(root: Path) -> list[str]:
    """Every import that runs back up the flow, or leaves the library's allowed stack."""
    out = []
    for top in ("features", "training", "serving"):
        for path in sorted((root / top).rglob("*.py")):
            here = module_name(path, root)
            mine = layer(here)
            for line, target in imports(path):
                theirs = layer(target)
                where = f"{path.relative_to(root)}:{line}"
                if theirs is not None and mine is not None and theirs > mine:
                    out.append(f"{where}: {here} imports {target} (up the flow)")
                elif LAYERS[mine] == "training.models" and theirs is None:
                    top_level = target.split(".")[0]
                    if (top_level not in sys.stdlib_module_names
                            and top_level not in LIBRARY_DEPENDENCIES):
                        out.append(f"{where}: the model library imports {target}")
                elif LAYERS[mine] == "training.models" and theirs is not None and theirs < mine:
                    out.append(f"{where}: the model library imports {target} (features)")
    return out


def test_imports_run_one_way_along_the_flow():
    assert violations(ROOT) == []


def test_the_check_catches_an_import_back_up_the_flow(tmp_path):
    for package in ("features", "training/models", "serving"):
        (tmp_path / package).mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "training" / "__init__.py").write_text("")
    (tmp_path / "features" / "bad.py").write_text("def f():\n    from serving import x\n")
    (tmp_path / "training" / "models" / "bad.py").write_text(
        "import mlflow\nfrom features.errors import DataError\nfrom training import train\n")
    (tmp_path / "training" / "fine.py").write_text("from features import errors\n")
    found = violations(tmp_path)
    assert len(found) == 4, found
    assert any("features/bad.py:2" in v and "serving" in v for v in found)
    assert any("imports mlflow" in v for v in found)
    assert any("features.errors" in v for v in found)
    assert any("training.train" in v for v in found)


@pytest.mark.parametrize("package", ["features", "training", "training.models", "serving",
                                     "training.models.uplift", "training.uplift"])
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    assert module.__all__, package
    for name in module.__all__:
        # a public name equal to a submodule's would be replaced by the module once imported
        assert importlib.util.find_spec(f"{package}.{name}") is None or isinstance(
            getattr(module, name), type(module)), f"{package}.{name} is also a submodule"
        assert getattr(module, name) is not None, f"{package}.{name}"
