"""Register the algorithms with Ray Tune by name (``tune.Tuner("PPO", ...)``)."""

from __future__ import annotations

from ray.tune.registry import register_trainable

from training.algorithms import ALGORITHMS, algorithm_class

__all__ = ["register_algorithms"]


def register_algorithms() -> None:
    """Register every algorithm in :data:`training.algorithms.ALGORITHMS` under its name."""
    for name in ALGORITHMS:
        try:
            cls = algorithm_class(name)
        except (ImportError, AttributeError):  # an algorithm still being built
            continue
        register_trainable(name, cls)
