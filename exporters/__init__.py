"""rlserve.exporters: turn a training checkpoint into a self-contained, verified artifact.

``load_artifact`` (the only way serving opens an artifact) never imports the training package;
``export_checkpoint`` does, and is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exporters.artifact import Artifact, OnnxPolicy, load_artifact
from exporters.errors import ArtifactError, ArtifactVersionError, ExportError
from exporters.manifest import ARTIFACT_VERSION, FORMAT_FILES, Manifest

if TYPE_CHECKING:  # the real import happens on first use (see __getattr__)
    from exporters.export import export_checkpoint, multi_agent_policies

__all__ = [
    "ARTIFACT_VERSION",
    "FORMAT_FILES",
    "Artifact",
    "ArtifactError",
    "ArtifactVersionError",
    "ExportError",
    "Manifest",
    "OnnxPolicy",
    "export_checkpoint",
    "load_artifact",
    "multi_agent_policies",
]


def __getattr__(name: str) -> Any:
    """Import the export path (which needs training and torch) only when it is asked for."""
    if name in ("export_checkpoint", "multi_agent_policies"):
        from exporters import export

        return getattr(export, name)
    raise AttributeError(f"module 'exporters' has no attribute {name!r}")
