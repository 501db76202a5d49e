"""The package layout and the one-way import rule: training <- exporters <- serving."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("training", "exporters", "serving")
# The shared bottom layer: formats every package reads and writes. It imports none of ours.
FOUNDATION = {"rlserve", "rlserve.spaces", "rlserve.safeio"}
# Which of our packages each package may import (besides itself and the foundation).
ALLOWED: dict[str, set[str]] = {
    "training": set(),
    "exporters": {"training"},
    "serving": {"exporters"},
    "rlserve": {"training", "exporters", "serving"},
}
OURS = set(ALLOWED)


def _imported_modules(path: Path) -> set[str]:
    """Our modules a file imports (dotted names), wherever the import statement is."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            # `from rlserve import cli` imports a module, `from rlserve.spaces import x` a name.
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if _is_module(f"{node.module}.{alias.name}")
            )
    return {name for name in found if name.split(".")[0] in OURS}


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imported_top_levels(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imported_modules(path) if name not in FOUNDATION}


def _violations(path: Path, package: str) -> set[str]:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    imported = _imported_modules(path)
    if module in FOUNDATION or module == "rlserve.__init__":
        # The foundation stands alone: it may import only the foundation.
        return {name for name in imported if name not in FOUNDATION}
    allowed = ALLOWED[package] | {package}
    return {
        name for name in imported if name not in FOUNDATION and name.split(".")[0] not in allowed
    }


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_go_one_way(package: str) -> None:
    """No module imports a package that sits above it, not even lazily inside a function."""
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _violations(path, package)
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_serving_import_does_not_load_training() -> None:
    """A serving replica needs the artifact, never the training code (checked at run time too)."""
    code = (
        "import sys, serving, exporters; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'training'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_the_import_checker_catches_a_violation(tmp_path: Path) -> None:
    """The static checker above really finds upward and lazy imports."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from rlserve.spaces import flatten_leaves\n"
        "def f():\n    import training.algorithm\n    from serving import app\n"
    )
    assert _imported_top_levels(bad) == {"training", "serving"}
    foundation = ROOT / "rlserve" / "spaces.py"
    assert _violations(foundation, "rlserve") == set()
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("from rlserve.cli import app\nfrom rlserve import train\n")
    assert _imported_modules(sneaky) == {"rlserve.cli", "rlserve", "rlserve.train"}


@pytest.mark.parametrize("package", [*LIBRARIES, "rlserve"])
def test_packages_are_typed(package: str) -> None:
    assert (ROOT / package / "py.typed").is_file()


def test_every_subpackage_is_listed_in_pyproject() -> None:
    """setuptools only ships the packages it is told about: a wheel must miss none."""
    import re

    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M)
    assert block is not None
    listed = set(re.findall(r'"([^"]+)"', block.group(1)))
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for package in ALLOWED
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert found == listed
