"""Tampering with a copy of an artifact the way an attacker who can write its directory would.

Shared by the exporters' and serving's artifact tests. Always work on a copy
(:func:`copy_artifact`): the session fixtures' artifacts are shared by every test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from exporters.manifest import Manifest, content_version
from formats.safeio import sha256_file

__all__ = ["copy_artifact", "flip_byte", "read_manifest", "rehash", "write_manifest"]


def copy_artifact(source: Path, target: Path) -> Path:
    """A private copy of an artifact directory (regular files only, no links followed)."""
    shutil.copytree(source, target, symlinks=True)
    return target


def read_manifest(artifact_dir: Path) -> dict[str, Any]:
    """``manifest.json`` as a dict."""
    data: dict[str, Any] = json.loads((artifact_dir / "manifest.json").read_text())
    return data


def write_manifest(artifact_dir: Path, data: dict[str, Any]) -> None:
    """Replace ``manifest.json``."""
    (artifact_dir / "manifest.json").write_text(json.dumps(data, indent=2))


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Invert one byte of a file (its middle one by default), keeping its size."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    path.write_bytes(bytes(data))


def rehash(artifact_dir: Path, *names: str, version: bool = False) -> str:
    """Rewrite the manifest's hash and size of ``names`` to match the files as they are now.

    Args:
        artifact_dir: The artifact copy.
        names: Files to (re-)list; each gets its current sha256 and size.
        version: Also rewrite ``version`` to the content's (the thorough attacker).

    Returns:
        The content version the rewritten manifest and files now have.
    """
    data = read_manifest(artifact_dir)
    for name in names:
        path = artifact_dir / name
        data["files"][name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    files = data.pop("files")
    expected = content_version(Manifest.model_validate(data), files)
    if version:
        data["version"] = expected
    write_manifest(artifact_dir, {**data, "files": files})
    return expected
