"""The package layout: one layer per top-level package, imports pointing down only."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("formats", "training", "exporters", "serving", "rlserve")
"""The layers, bottom first. A module may import its own layer and the layers below it."""


def _imported_packages(path: Path) -> set[str]:
    """Our top-level packages a file imports, wherever the import statement is (lazy ones too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(LAYERS)


def _upward_imports(path: Path, layer: str) -> set[str]:
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    return _imported_packages(path) & above


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_point_down(layer: str) -> None:
    """No module imports a layer above its own, not even lazily inside a function."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {sorted(bad)}"
        for path in sorted((ROOT / layer).rglob("*.py"))
        if (bad := _upward_imports(path, layer))
    ]
    assert not offenders, "\n".join(offenders)


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    """The static checker really finds upward and lazy imports, and allows downward ones."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from formats.spaces import flatten_leaves\n"
        "def f():\n    import training.algorithm\n    from serving import app\n"
    )
    assert _upward_imports(bad, "formats") == {"training", "serving"}
    assert _upward_imports(bad, "exporters") == {"serving"}
    assert _upward_imports(bad, "rlserve") == set()


def test_the_layers_are_every_package() -> None:
    """Every top-level package of the project is a layer: none sits outside the order."""
    packages = {init.parent.name for init in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(LAYERS)


def test_serving_import_does_not_load_training() -> None:
    """A serving replica needs the artifact, never the training code (checked at run time too)."""
    code = (
        "import sys, serving, serving.app, exporters; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'training'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("package", LAYERS)
def test_packages_are_typed(package: str) -> None:
    assert (ROOT / package / "py.typed").is_file()


def test_every_subpackage_is_listed_in_pyproject() -> None:
    """setuptools only ships the packages it is told about: a wheel must miss none."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M)
    assert block is not None
    listed = set(re.findall(r'"([^"]+)"', block.group(1)))
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for package in LAYERS
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert found == listed
