"""The exporters' errors, in one module every other exporters module may import.

``ExportError`` (writing an artifact) and ``ArtifactError`` / ``ArtifactVersionError`` (reading
one) live here rather than beside the code that raises them, so that :mod:`exporters.export` and
:mod:`exporters.verify` both import them without importing each other. Every one of them is an
:class:`formats.errors.RlserveError`.
"""

from __future__ import annotations

from formats.errors import RlserveError
from formats.safeio import FormatVersionError, IntegrityError

__all__ = ["ArtifactError", "ArtifactVersionError", "ExportError"]


class ExportError(RlserveError, ValueError):
    """An export failed or its result does not match the eager module."""


class ArtifactError(IntegrityError):
    """An artifact directory is missing, malformed, corrupt, tampered or unsafe."""


class ArtifactVersionError(ArtifactError, FormatVersionError):
    """An artifact was written in a newer format version than this code reads."""
