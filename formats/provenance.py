"""Which library versions a checkpoint or an artifact records, written once.

A checkpoint records what shaped its tensors and its env (``CHECKPOINT_LIBRARIES``); an artifact
records what shaped its graphs and what will run them (``ARTIFACT_LIBRARIES``). Both go into the
directory's metadata so that a load on another machine can say what differed.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

__all__ = ["ARTIFACT_LIBRARIES", "CHECKPOINT_LIBRARIES", "library_versions"]

CHECKPOINT_LIBRARIES = ("rlserve", "torch", "gymnasium", "ray", "numpy", "safetensors")
ARTIFACT_LIBRARIES = ("rlserve", "torch", "onnx", "onnxruntime", "onnxscript", "gymnasium", "numpy")


def library_versions(distributions: Iterable[str]) -> dict[str, str]:
    """The installed version of each distribution (``"unknown"`` where it is not installed)."""
    versions = {}
    for dist in distributions:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions
