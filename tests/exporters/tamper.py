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

__all__ = [
    "change_onnx_weight",
    "copy_artifact",
    "flip_byte",
    "read_manifest",
    "rehash",
    "write_manifest",
]


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


def flip_byte(path: Path, offset: int | None = None, mask: int = 0xFF) -> None:
    """Flip the ``mask`` bits of one byte (the middle one by default), keeping the size."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= mask
    path.write_bytes(bytes(data))


def change_onnx_weight(path: Path) -> None:
    """Change one weight of an ONNX model in place: still a valid model, a different policy.

    Flips the sign bit of the middle float of the largest initializer, found in the file's own
    bytes, so that nothing else in the protobuf moves.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = max(model.graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    data = path.read_bytes()
    start = data.find(weights)
    assert len(weights) >= 8 and start >= 0 and data.find(weights, start + 1) < 0
    flip_byte(path, start + (len(weights) // 8) * 4 + 3, mask=0x80)  # float32 LE: sign bit


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
