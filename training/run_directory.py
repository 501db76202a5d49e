"""Run directories: which of a run's checkpoints to resume from.

A *run directory* (``rlserve train --checkpoint-dir``, a Tune trial directory) holds several
``checkpoint_*`` directories. :func:`latest_checkpoint` picks the newest one that verifies and
names every newer one it had to skip (empty, partial, tampered) and why: a run killed during a
save still resumes from its last complete checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import NamedTuple

from formats.safeio import METADATA_MAX_BYTES, read_json
from training.checkpoint_format import CHECKPOINT_PREFIX, verify_checkpoint
from training.errors import CheckpointError

__all__ = [
    "SkippedCheckpoint",
    "find_latest_checkpoint",
    "is_run_directory",
    "latest_checkpoint",
    "resolve_checkpoint",
]

_NUMBERED = re.compile(r"checkpoint_(\d+)")

logger = logging.getLogger(__name__)


class SkippedCheckpoint(NamedTuple):
    """A ``checkpoint_*`` directory of a run that :func:`find_latest_checkpoint` passed over."""

    path: Path
    reason: str


def _checkpoint_dirs(root: Path) -> list[Path]:
    """The ``checkpoint_*`` entries of a run directory that are directories or links.

    Hidden names (the atomic writer's ``.checkpoint_*.tmp-*`` and ``.old-*`` siblings) never
    match; plain files are ignored; links are kept so that they are reported, not followed.
    """
    found = []
    for entry in os.scandir(root):
        if entry.name.startswith(CHECKPOINT_PREFIX) and (
            entry.is_symlink() or entry.is_dir(follow_symlinks=False)
        ):
            found.append(Path(entry.path))
    return found


def is_run_directory(path: str | Path) -> bool:
    """Whether ``path`` is a run directory: no ``metadata.json``, some ``checkpoint_*`` dirs."""
    root = Path(path)
    return (
        root.is_dir()
        and not os.path.lexists(root / "metadata.json")
        and bool(_checkpoint_dirs(root))
    )


def _rank(path: Path) -> tuple[float, int]:
    """How new a checkpoint claims to be: (iteration, mtime), for the order of trying them.

    The iteration comes from ``metadata.json`` when it reads (verified later), else from a
    ``checkpoint_<n>`` name; a directory with neither (an unreadable ``checkpoint_final``)
    ranks first so that it is tried, and reported, rather than silently passed over.
    """
    try:
        mtime = os.lstat(path).st_mtime_ns
    except OSError:
        mtime = 0
    try:
        iteration = read_json(path / "metadata.json", max_bytes=METADATA_MAX_BYTES)["iteration"]
        if type(iteration) is int:
            return float(iteration), mtime
    except (OSError, ValueError, TypeError, KeyError):
        pass  # unreadable: verification below says why
    numbered = _NUMBERED.fullmatch(path.name)
    return (float(numbered.group(1)) if numbered else math.inf), mtime


def _why(path: Path, err: Exception) -> str:
    prefix = f"checkpoint {path}: "
    text = str(err)
    return text[len(prefix) :] if text.startswith(prefix) else text


def find_latest_checkpoint(run_dir: str | Path) -> tuple[Path, list[SkippedCheckpoint]]:
    """The newest ``checkpoint_*`` directory of a run that verifies, and those skipped first.

    Candidates are tried newest first (by the iteration they claim, then modification time)
    and fully verified (:func:`verify_checkpoint`); each newer one that fails (empty, partial,
    tampered, a link) is returned with the reason. Older ones are not checked.

    Raises:
        CheckpointError: If ``run_dir`` holds no ``checkpoint_*`` directory, or none verifies
            (one line naming each and why).
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise CheckpointError(f"run directory {root}: not a directory (or it does not exist)")
    candidates = sorted(_checkpoint_dirs(root), key=_rank, reverse=True)
    if not candidates:
        raise CheckpointError(f"run directory {root}: holds no checkpoint_* directory")
    skipped: list[SkippedCheckpoint] = []
    for candidate in candidates:
        if candidate.is_symlink():
            skipped.append(SkippedCheckpoint(candidate, "is a symbolic link; links are not used"))
            continue
        try:
            verify_checkpoint(candidate)
        except CheckpointError as err:
            skipped.append(SkippedCheckpoint(candidate, _why(candidate, err)))
            continue
        return candidate, skipped
    reasons = "; ".join(f"{s.path.name}: {s.reason}" for s in skipped)
    raise CheckpointError(f"run directory {root}: no checkpoint verifies ({reasons})")


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest verifying checkpoint of a run; logs one warning per newer one skipped.

    Raises:
        CheckpointError: As :func:`find_latest_checkpoint`.
    """
    path, skipped = find_latest_checkpoint(run_dir)
    for item in skipped:
        logger.warning("skipping checkpoint %s: %s", item.path, item.reason)
    return path


def resolve_checkpoint(path: str | Path) -> tuple[Path, list[SkippedCheckpoint]]:
    """A checkpoint directory as given, or a run directory's newest verifying checkpoint.

    Raises:
        CheckpointError: For a run directory without a verifying checkpoint.
    """
    if is_run_directory(path):
        return find_latest_checkpoint(path)
    return Path(path), []
