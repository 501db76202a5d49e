"""The root of rlserve's exception tree.

Every error that reports a user's mistake or a bad input (a config, a checkpoint, an artifact,
an observation, a service's answer) derives from :class:`RlserveError`, so one ``except`` catches
them all and nothing else: the CLI prints these as one line and exits 2, and treats every other
exception as a bug (traceback, exit 1). Subclasses keep ``ValueError`` (or ``RuntimeError``) as a
second base where callers already catch that.
"""

from __future__ import annotations

__all__ = ["RlserveError"]


class RlserveError(Exception):
    """Base class of every user-facing rlserve error."""
