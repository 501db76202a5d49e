"""Errors of ``training`` that modules on different levels raise (all under ``RlserveError``)."""

from __future__ import annotations

from formats.safeio import FormatVersionError, IntegrityError

__all__ = ["CheckpointError", "CheckpointVersionError"]


class CheckpointError(IntegrityError):
    """A checkpoint directory is missing, malformed, corrupt or unsafe to read."""


class CheckpointVersionError(CheckpointError, FormatVersionError):
    """A checkpoint was written in a format version that this code cannot read."""
