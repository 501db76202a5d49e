"""formats: the bottom layer, the shapes every other package reads and writes.

It imports none of rlserve's other packages, so training, the exporters, a serving replica and
a game client all share it:

- :mod:`formats.spaces`: gymnasium spaces as JSON, observations as flat leaves;
- :mod:`formats.safeio`: atomic, hash-verified directories (checkpoints and artifacts);
- :mod:`formats.errors`: :class:`RlserveError`, the root of every user-facing error;
- :mod:`formats.provenance`: which library versions a checkpoint or an artifact records.

Importing the package itself is cheap (the error root only): the submodules are imported by
name where they are needed, so a client that only needs the error root never loads gymnasium.
"""

from formats.errors import RlserveError

__all__ = ["RlserveError"]
