"""The artifact manifest: what an exported policy is, what its graph holds, how to feed it.

Shared by the writer (:mod:`exporters.export`) and the loader (:mod:`exporters.artifact`);
it imports nothing from ``training`` so a serving replica can read it.

The version an artifact is served under is :func:`content_version`: a hash of what the
artifact *is*, computed the same way by the exporter (which writes it into ``manifest.json``)
and by the loader (which recomputes it from the verified files and refuses a manifest whose
stored ``version`` disagrees).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ARTIFACT_FORMAT",
    "ARTIFACT_VERSION",
    "FORMAT_FILES",
    "PREVIOUS_ACTIONS",
    "PREVIOUS_REWARDS",
    "PROVENANCE_FIELDS",
    "ActionDistribution",
    "FormatEntry",
    "Manifest",
    "StateSpec",
    "TensorSpec",
    "content_version",
]

ARTIFACT_FORMAT = "rlserve-artifact"
ARTIFACT_VERSION = "1.4"
"""The format this rlserve writes; the loader reads every ``1.x`` and refuses a newer major.

* 1.1: ``version`` is :func:`content_version` (1.0 hashed the module weights only).
* 1.2: ``action_distribution`` may be ``"squashed_gaussian"`` (SAC). A minor bump: every 1.1
  artifact reads unchanged, and a 1.1 reader still reads every 1.2 artifact of the old kinds; it
  refuses a SAC one at that field (the manifest model is strict) rather than sampling an
  unsquashed Gaussian from it. Like any format change it gives re-exported artifacts new ids
  (``format_version`` is part of :func:`content_version`).
* 1.3: ``state`` describes a recurrent policy's state inputs and outputs. Written only for a
  recurrent policy, so a 1.2 reader reads every feed-forward 1.3 artifact and refuses a
  recurrent one at that field (it could not feed the state).
* 1.4: ``previous`` names the previous action and reward a recurrent graph reads
  (``lstm_use_prev_action`` / ``lstm_use_prev_reward``), fed after the observation leaves and
  before the state. Written only for such a policy (a 1.3 reader refuses it at that field).
"""
ActionDistribution = Literal["categorical", "diag_gaussian", "squashed_gaussian", "q_values"]
"""``action_distribution``: what ``action_dist_inputs`` holds and how serving samples it.

``categorical``: logits. ``diag_gaussian``: ``concat(mean, log_std)``, samples clipped into the
Box (PPO). ``squashed_gaussian``: ``concat(mean, log_std)`` before a tanh squash rescaled into the
Box (SAC). ``q_values``: one Q-value per action, epsilon-greedy (DQN).
"""
FORMAT_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "torch_export": "model.pt2"}
"""Export formats and the file each one writes."""
PREVIOUS_ACTIONS = "prev_actions"
"""The graph input (``previous``) of the action taken at the step before: an action per row."""
PREVIOUS_REWARDS = "prev_rewards"
"""The graph input (``previous``) of the reward received at the step before."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One graph input or output: name, per-row shape after the batch axis, dtype."""

    name: str
    shape: list[int | str]
    dtype: str
    path: str | None = None
    """For inputs: the observation leaf (dotted Dict/Tuple path) this input carries."""


class StateSpec(_Strict):
    """One part of a recurrent policy's state: fed as ``input``, returned as ``output``.

    A step takes the state its previous step returned; an episode starts from ``initial``.
    """

    input: str
    output: str
    shape: list[int | str]
    dtype: str = "float32"
    initial: Literal["zeros"] = "zeros"


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
    version: str = Field(description="content_version(): any change to the content, a new id")
    algorithm: str
    source_checkpoint: str
    source_metadata_sha256: str
    source_iteration: int
    observation_space: dict[str, Any]
    action_space: dict[str, Any]
    action_distribution: ActionDistribution
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    graph_contains: list[str]
    observation_filter: Literal["NoFilter", "MeanStdFilter"]
    max_batch_size: int
    formats: dict[str, FormatEntry]
    library_versions: dict[str, str]
    state: list[StateSpec] | None = None
    """A recurrent policy's state (``None``: feed-forward; then left out of the JSON)."""
    previous: list[TensorSpec] | None = None
    """The previous action (``prev_actions``: an action per row) and reward (``prev_rewards``)
    a recurrent graph reads, zeros at an episode's first step (``None``: none; left out)."""

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON; ``state`` and ``previous`` only when there are some."""
        data = self.model_dump(mode="json")
        for optional in ("state", "previous"):
            if data.get(optional) is None:
                data.pop(optional, None)
        return data


PROVENANCE_FIELDS = frozenset(
    {
        "policy_name",
        "source_checkpoint",
        "source_metadata_sha256",
        "source_iteration",
        "library_versions",
    }
)
"""Manifest fields that say where an artifact came from, not what it computes.

They are left out of :func:`content_version` so that the same policy gets the same id wherever
it was exported from: a checkpoint copied to another path, or trained again with the same seed
(its ``metadata.json`` records a new timestamp), exports to the same version. None of them is
read by the loader or the server to run the policy, so leaving them out lets no change to what
is served go unnoticed.
"""


def content_version(manifest: Manifest, files: Mapping[str, Mapping[str, Any]]) -> str:
    """The artifact's version: a hash of its file table and its manifest's semantic core.

    The digest covers the sha256 and size of every listed file (the graphs hold the weights,
    the filter statistics and the preprocessing, so any change to any listed file changes the
    version) and every manifest field except ``version`` itself and :data:`PROVENANCE_FIELDS`
    (spaces, inputs and outputs, formats, batch limit, format version: what a client sees and
    how the graph is fed). It is canonical JSON (sorted keys, no whitespace) so that exporting
    the same graphs twice gives the same id. Export is byte-deterministic for ONNX and
    ``torch.export``; TorchScript archives differ when a second export runs *in the same
    process* (torch renames classes it has already compiled), so a re-export there gets a new
    version while ``rlserve export`` run twice does not.

    This is identity, not authenticity: whoever can rewrite the files can also rewrite the
    hashes and the version, and the artifact then loads under a *new* version — never under the
    old one. Proving who exported an artifact would take a signature.

    Args:
        manifest: The parsed manifest (its ``version`` is ignored).
        files: The file table: name -> ``{"sha256", "size"}`` (other keys are ignored).

    Returns:
        16 hex digits (64 bits: matching a given version needs about 2**64 attempts).
    """
    core = manifest.to_json()
    for field in ("version", *PROVENANCE_FIELDS):
        core.pop(field, None)
    table = {
        name: {"sha256": entry["sha256"], "size": entry["size"]}
        for name, entry in sorted(files.items())
    }
    canonical = json.dumps(
        {"files": table, "manifest": core},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    digest = hashlib.sha256(b"rlserve-artifact-version\0" + canonical.encode("ascii"))
    return digest.hexdigest()[:16]
