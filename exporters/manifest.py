"""The artifact manifest: what an exported policy is, what its graph holds, how to feed it.

Shared by the writer (:mod:`exporters.export`) and the loader (:mod:`exporters.artifact`);
it imports nothing from ``training`` so a serving replica can read it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ARTIFACT_FORMAT",
    "ARTIFACT_VERSION",
    "FORMAT_FILES",
    "FormatEntry",
    "Manifest",
    "TensorSpec",
]

ARTIFACT_FORMAT = "rlserve-artifact"
ARTIFACT_VERSION = "1.0"
FORMAT_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "torch_export": "model.pt2"}
"""Export formats and the file each one writes."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One graph input or output: name, per-row shape after the batch axis, dtype."""

    name: str
    shape: list[int | str]
    dtype: str
    path: str | None = None
    """For inputs: the observation leaf (dotted Dict/Tuple path) this input carries."""


class FormatEntry(_Strict):
    """One exported file."""

    file: str
    opset: int | None = None
    legacy: bool = False
    note: str | None = None


class Manifest(_Strict):
    """``manifest.json`` minus the ``files`` table (which :mod:`formats.safeio` adds)."""

    format: Literal["rlserve-artifact"] = "rlserve-artifact"
    format_version: str = ARTIFACT_VERSION
    policy_name: str
    version: str = Field(description="content-derived id: same checkpoint weights, same id")
    algorithm: str
    source_checkpoint: str
    source_metadata_sha256: str
    source_iteration: int
    observation_space: dict[str, Any]
    action_space: dict[str, Any]
    action_distribution: Literal["categorical", "diag_gaussian", "q_values"]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    graph_contains: list[str]
    observation_filter: Literal["NoFilter", "MeanStdFilter"]
    max_batch_size: int
    formats: dict[str, FormatEntry]
    library_versions: dict[str, str]
