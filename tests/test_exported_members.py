"""Every public package's ``__all__`` is exactly its public surface (httpx's idiom)."""

from __future__ import annotations

import importlib
import types

import pytest

PUBLIC_PACKAGES = ("formats", "training", "exporters", "serving", "rlserve")


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_all_lists_the_public_members(name: str) -> None:
    """``__all__`` names every public member once (ruff's RUF022 keeps it sorted)."""
    package = importlib.import_module(name)
    exported = list(package.__all__)
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    # Names defined (or imported) at package level that are not submodules are public API.
    defined = {
        member
        for member, value in vars(package).items()
        if not member.startswith("_")
        and not isinstance(value, types.ModuleType)
        and member != "annotations"  # from __future__ import annotations
        and member not in {"TYPE_CHECKING", "Any"}  # typing helpers of lazy __getattr__ packages
    }
    assert defined <= set(exported), f"public but not in {name}.__all__: {defined - set(exported)}"


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_every_exported_name_resolves(name: str) -> None:
    """Each name in ``__all__`` is importable, lazy ones included."""
    package = importlib.import_module(name)
    missing = [member for member in package.__all__ if not hasattr(package, member)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"
