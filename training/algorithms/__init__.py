"""One subpackage per algorithm; shared machinery lives beside them in ``training``.

:data:`ALGORITHMS` is the one table of algorithm names (as recorded in checkpoints and
registered with Ray Tune) and where their classes live; the classes are imported only when
:func:`algorithm_class` asks for one, so importing this package imports no algorithm.
"""

from __future__ import annotations

import importlib
from typing import Any

from training.errors import CheckpointError

__all__ = ["ALGORITHMS", "algorithm_class"]

ALGORITHMS: dict[str, str] = {
    "PPO": "training.algorithms.ppo.ppo:PPO",
    "DQN": "training.algorithms.dqn.dqn:DQN",
    "SAC": "training.algorithms.sac.sac:SAC",
    "IMPALA": "training.algorithms.impala.impala:IMPALA",
}
"""Algorithm names recorded in checkpoints, and where their classes live."""


def algorithm_class(name: str) -> Any:
    """The algorithm class registered under ``name``.

    Raises:
        CheckpointError: For a name no algorithm is registered under.
    """
    if name not in ALGORITHMS:
        raise CheckpointError(f"unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}")
    module, _, attr = ALGORITHMS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
