"""``DQNConfig``: DQN's hyper-parameters on top of :class:`training.config.AlgorithmConfig`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from training.config import AlgorithmConfig
from training.config_sections import TrainingSection

__all__ = ["DQNConfig", "DQNTrainingSection"]


class DQNTrainingSection(TrainingSection):
    """DQN (Mnih et al., 2015) with double-Q, dueling heads and n-step returns.

    Attributes:
        lr: Adam learning rate.
        train_batch_size: Transitions per gradient step, drawn uniformly from the replay buffer.
        grad_clip: Max global gradient norm (``None`` disables clipping).
        replay_buffer_capacity: Transitions kept in the replay buffer.
        num_steps_sampled_before_learning_starts: Env steps collected before the first update.
        min_sample_timesteps_per_iteration: Env steps sampled per ``train()`` call (at least).
        training_intensity: Trained transitions per sampled env step; ``None`` does one
            gradient step per sampling round (RLlib's "natural" ratio).
        target_network_update_freq: Env steps between target-network updates.
        tau: Polyak factor of the target update (1.0 copies the weights).
        double_q: Select the next action with the online network (van Hasselt et al., 2016).
        dueling: Separate value and advantage streams (Wang et al., 2016).
        n_step: Steps of the multi-step return.
        epsilon_initial: Epsilon-greedy's starting epsilon.
        epsilon_final: Epsilon after ``epsilon_timesteps`` env steps (linear schedule).
        epsilon_timesteps: Length of the epsilon schedule in env steps.
        td_error_loss_fn: ``"huber"`` (smooth L1) or ``"mse"``.
    """

    lr: float = Field(default=5e-4, gt=0.0)
    train_batch_size: int = Field(default=32, ge=1)
    grad_clip: float | None = Field(default=10.0, gt=0.0)
    replay_buffer_capacity: int = Field(default=50_000, ge=1)
    num_steps_sampled_before_learning_starts: int = Field(default=1000, ge=0)
    min_sample_timesteps_per_iteration: int = Field(default=1000, ge=1)
    training_intensity: float | None = Field(default=None, gt=0.0)
    target_network_update_freq: int = Field(default=500, ge=1)
    tau: float = Field(default=1.0, gt=0.0, le=1.0)
    double_q: bool = True
    dueling: bool = True
    n_step: int = Field(default=1, ge=1)
    epsilon_initial: float = Field(default=1.0, ge=0.0, le=1.0)
    epsilon_final: float = Field(default=0.02, ge=0.0, le=1.0)
    epsilon_timesteps: int = Field(default=10_000, ge=1)
    td_error_loss_fn: Literal["huber", "mse"] = "huber"


class DQNConfig(AlgorithmConfig):
    """Config for :class:`training.algorithms.dqn.DQN` (Discrete action spaces).

    ``rollout_fragment_length="auto"`` samples 4 steps per env per round.

    Example:
        >>> config = DQNConfig().environment("CartPole-v1").training(n_step=3)
    """

    training_section = DQNTrainingSection
    algo_class_path = "training.algorithms.dqn.dqn:DQN"

    @property
    def hyperparameters(self) -> DQNTrainingSection:
        """The validated ``training()`` section (what the learner reads)."""
        section = self._values["training"]
        assert isinstance(section, DQNTrainingSection)
        return section

    def get_rollout_fragment_length(self) -> int:
        """Steps per env per sampling round (``"auto"``: 4)."""
        if self.rollout_fragment_length == "auto":
            return 4
        return int(self.rollout_fragment_length)
