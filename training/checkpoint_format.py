"""The checkpoint format's names and its verification (before anything is read).

Shared by single-agent checkpoints (:mod:`training.checkpoints`) and policy maps'
(:mod:`training.multi_agent.checkpoints`); it imports neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from formats.safeio import IntegrityError, verify_directory
from training.errors import CheckpointError, CheckpointVersionError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_PREFIX",
    "CHECKPOINT_VERSION",
    "JSON_LIMIT",
    "REQUIRED_FILES",
    "CheckpointContents",
    "verify_checkpoint",
]

CHECKPOINT_FORMAT = "rlserve-checkpoint"
CHECKPOINT_VERSION = "1.1"
"""1.1: multi-agent checkpoints (``metadata["multi_agent"]``, a module file per policy); a 1.0
reader refuses them at the missing ``module.safetensors``. Every 1.0 checkpoint reads as before."""
JSON_LIMIT = 64 * 1024 * 1024
CHECKPOINT_PREFIX = "checkpoint_"
REQUIRED_FILES = (
    "algorithm_config.json",
    "module.safetensors",
    "learner_state.safetensors",
    "learner_state.json",
)


class CheckpointContents(NamedTuple):
    """Everything read (and verified) from a checkpoint directory."""

    path: Path
    metadata: dict[str, Any]
    config: dict[str, Any]
    module_state: dict[str, torch.Tensor]
    learner_tensors: dict[str, torch.Tensor]
    learner_json: dict[str, Any]
    filter_state: dict[str, Any] | None


def _check_version(path: Path, metadata: dict[str, Any]) -> None:
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path}: metadata.json format is {metadata.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}"
        )
    version = str(metadata.get("format_version", ""))
    try:
        major = int(version.split(".", maxsplit=1)[0])
    except ValueError:
        raise CheckpointError(f"checkpoint {path}: bad format_version {version!r}") from None
    if major > int(CHECKPOINT_VERSION.split(".", maxsplit=1)[0]):
        raise CheckpointVersionError(
            f"checkpoint {path}: format version {version} is newer than this rlserve reads "
            f"({CHECKPOINT_VERSION}); upgrade rlserve"
        )


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check a checkpoint directory without reading its payload; return its metadata.

    Every listed file's size and sha256, the format and version, and that every required
    file is listed.

    Raises:
        CheckpointError: Naming the bad file (tampered, truncated, missing) or field.
        CheckpointVersionError: For a newer major format version.
    """
    root = Path(path)
    try:
        metadata = verify_directory(root, kind="checkpoint")
    except IntegrityError as err:
        raise CheckpointError(str(err)) from None
    _check_version(root, metadata)
    # A policy map's checkpoint has a module file per policy (training.multi_agent.checkpoints).
    required_files = (
        ("algorithm_config.json", "multi_agent.json")
        if metadata.get("multi_agent")
        else REQUIRED_FILES
    )
    for required in required_files:
        if required not in metadata["files"]:
            raise CheckpointError(f"checkpoint {root}: metadata.json does not list {required}")
    return metadata
