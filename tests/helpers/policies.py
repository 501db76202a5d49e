"""The tiny trained policies every test shares: one session-wide set, trained on first use.

One policy per kind of space the exporters and the server must handle:

* ``cartpole``: PPO on CartPole (Box observations, Discrete actions). Exactly the recipe of the
  ``cartpole_checkpoint`` fixture, whose checkpoint is this policy after its first iteration.
* ``pendulum``: PPO on Pendulum with a ``MeanStdFilter`` (Box actions, clipped in the graph).
* ``structured``: PPO on ``tests.helpers.envs:StructuredEnv`` (Dict/Tuple observations) with a
  ``MeanStdFilter``.
* ``dqn``: DQN on CartPole (Q-values).
* ``impala`` / ``impala_pendulum``: IMPALA on CartPole, and on Pendulum with a
  ``MeanStdFilter`` (its actor-critic is PPO's; the artifacts must be alike).
* ``lstm``: PPO with an LSTM (8 cells) on ``StatelessCartPole``, whose answers depend on its
  state; ``lstm_prev``: the same LSTM also reading the previous action and reward. Not in
  :data:`POLICY_NAMES` (the feed-forward policies every route is tried with).

Each trains :data:`ITERATIONS` iterations once and keeps a checkpoint after every iteration (two
versions of one policy, for hot reload); artifacts are exported once per set of formats.
Use it through the ``tiny_policies`` fixture (``tests/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CONTINUOUS",
    "DISTRIBUTIONS",
    "FILTERED",
    "ITERATIONS",
    "POLICY_NAMES",
    "TinyPolicies",
    "config_for",
]

ITERATIONS = 2
"""Training iterations of every policy (a checkpoint is kept after each)."""
POLICY_NAMES = ("cartpole", "dqn", "pendulum", "structured", "impala", "impala_pendulum")
FILTERED = frozenset({"pendulum", "structured", "impala_pendulum"})
"""Trained with a ``MeanStdFilter``: the filter is part of the exported graph."""
CONTINUOUS = frozenset({"pendulum", "impala_pendulum"})
"""Box actions: clipping is part of the exported graph."""
DISTRIBUTIONS = {
    "cartpole": "categorical",
    "dqn": "q_values",
    "pendulum": "diag_gaussian",
    "structured": "categorical",
    "impala": "categorical",
    "impala_pendulum": "diag_gaussian",
}
"""The manifest's ``action_distribution`` of each policy."""


def _cartpole() -> Any:
    from training import PPOConfig

    return PPOConfig().environment("CartPole-v1").training(train_batch_size=64, minibatch_size=32)


def _filtered_ppo(env: str) -> Callable[[], Any]:
    def make() -> Any:
        from training import PPOConfig

        return (
            PPOConfig()
            .environment(env)
            .env_runners(
                num_envs_per_env_runner=2,
                rollout_fragment_length=32,
                observation_filter="MeanStdFilter",
            )
            .training(train_batch_size=64, minibatch_size=32, num_epochs=1)
        )

    return make


def _dqn() -> Any:
    from training import DQNConfig

    return (
        DQNConfig()
        .environment("CartPole-v1")
        .env_runners(num_envs_per_env_runner=2, rollout_fragment_length=32)
        .training(
            num_steps_sampled_before_learning_starts=32, min_sample_timesteps_per_iteration=64
        )
    )


def _impala(env: str, observation_filter: str) -> Callable[[], Any]:
    def make() -> Any:
        from training import IMPALAConfig

        return (
            IMPALAConfig()
            .environment(env)
            .env_runners(
                num_envs_per_env_runner=2,
                rollout_fragment_length=16,
                observation_filter=observation_filter,
            )
            .training(train_batch_size=64, min_sample_timesteps_per_iteration=128)
        )

    return make


def _lstm(previous: bool) -> Callable[[], Any]:
    def make() -> Any:
        from training import PPOConfig

        model = {"use_lstm": True, "lstm_cell_size": 8, "max_seq_len": 8, "fcnet_hiddens": [16]}
        if previous:
            model.update(lstm_use_prev_action=True, lstm_use_prev_reward=True)
        return (
            PPOConfig()
            .environment("training.example_envs:StatelessCartPole")
            .env_runners(num_envs_per_env_runner=2, rollout_fragment_length=32)
            .training(model=model, train_batch_size=64, minibatch_size=32, num_epochs=1)
        )

    return make


_CONFIGS: dict[str, Callable[[], Any]] = {
    "cartpole": _cartpole,
    "dqn": _dqn,
    "pendulum": _filtered_ppo("Pendulum-v1"),
    "structured": _filtered_ppo("tests.helpers.envs:StructuredEnv"),
    "impala": _impala("CartPole-v1", "NoFilter"),
    "impala_pendulum": _impala("Pendulum-v1", "MeanStdFilter"),
    "lstm": _lstm(previous=False),
    "lstm_prev": _lstm(previous=True),
}


def config_for(name: str) -> Any:
    """A fresh ``AlgorithmConfig`` of policy ``name`` (seeded)."""
    return _CONFIGS[name]().debugging(seed=0)


class TinyPolicies:
    """The shared set: checkpoints and exported artifacts, each made once, on first use.

    Args:
        root: Where the checkpoints and artifacts are written (a session temporary directory).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._checkpoints: dict[str, list[Path]] = {}
        self._artifacts: dict[tuple[str, int, tuple[str, ...] | None], Path] = {}

    def checkpoint(self, name: str, iteration: int = ITERATIONS) -> Path:
        """Policy ``name``'s checkpoint after ``iteration`` (1-based) training iterations."""
        if name not in self._checkpoints:
            self._checkpoints[name] = self._train(name)
        return self._checkpoints[name][iteration - 1]

    def artifact(
        self, name: str, formats: Sequence[str] | None = None, iteration: int = ITERATIONS
    ) -> Path:
        """That checkpoint exported with ``formats`` (``None``: every format)."""
        key = (name, iteration, None if formats is None else tuple(formats))
        if key not in self._artifacts:
            from exporters import export_checkpoint

            label = "all" if formats is None else "-".join(formats)
            out = self.root / name / f"artifact{iteration}-{label}"
            checkpoint = self.checkpoint(name, iteration)
            if formats is None:
                self._artifacts[key] = export_checkpoint(checkpoint, out)
            else:
                self._artifacts[key] = export_checkpoint(checkpoint, out, list(formats))
        return self._artifacts[key]

    def _train(self, name: str) -> list[Path]:
        root = self.root / name
        checkpoints = []
        with config_for(name).build() as algo:
            for iteration in range(1, ITERATIONS + 1):
                algo.train()
                saved = algo.save(str(root / f"checkpoint{iteration}"))
                checkpoints.append(Path(saved.checkpoint.path))
        return checkpoints
