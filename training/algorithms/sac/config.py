"""``SACConfig``: Soft Actor-Critic's hyper-parameters on top of :class:`AlgorithmConfig`.

Names and defaults follow RLlib's ``SACConfig`` (and the paper's settings where RLlib leaves
them to the user): twin Q networks, Polyak-averaged targets (``tau=0.005``), automatic entropy
tuning towards ``target_entropy="auto"`` = ``-dim(A)``, 256-256 ReLU networks.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from training.config import AlgorithmConfig, ConfigError
from training.config_sections import ModelConfig, Section, TrainingSection

__all__ = ["ReplayBufferConfig", "SACConfig", "SACTrainingSection"]


def _sac_model() -> ModelConfig:
    return ModelConfig(fcnet_hiddens=[256, 256], fcnet_activation="relu")


class ReplayBufferConfig(Section):
    """The replay buffer (RLlib's ``replay_buffer_config``).

    Attributes:
        capacity: Transitions kept; the oldest are overwritten.
        prioritized: Proportional prioritized replay (Schaul et al., 2016) instead of uniform.
        alpha: How strongly priorities shape sampling (0 is uniform).
        beta: Importance-sampling correction (1 corrects fully).
    """

    capacity: int = Field(default=1_000_000, ge=1)
    prioritized: bool = False
    alpha: float = Field(default=0.6, ge=0.0)
    beta: float = Field(default=0.4, ge=0.0, le=1.0)


class SACTrainingSection(TrainingSection):
    """SAC (Haarnoja et al., 2018, "Soft Actor-Critic Algorithms and Applications").

    Attributes:
        lr: Not used by SAC, which has one learning rate per loss; must stay ``None``.
        actor_lr: Adam learning rate of the policy.
        critic_lr: Adam learning rate of the Q networks.
        alpha_lr: Adam learning rate of ``log(alpha)``.
        train_batch_size: Transitions per gradient step, drawn from the replay buffer.
        twin_q: Two Q networks, the smaller estimate used (clipped double-Q).
        tau: Polyak factor of the target networks' update after every gradient step.
        initial_alpha: The entropy coefficient at the start.
        target_entropy: The entropy automatic tuning aims at; ``"auto"`` is ``-dim(A)``.
        n_step: Steps of the multi-step return.
        num_steps_sampled_before_learning_starts: Env steps collected before the first update.
        min_sample_timesteps_per_iteration: Env steps sampled per ``train()`` call (at least).
        training_intensity: Trained transitions per sampled env step; ``None`` does one
            gradient step per sampling round (one per env step with one env and the
            ``"auto"`` fragment length of 1, as in the paper).
        replay_buffer_config: The replay buffer.
        model: The policy network (``fcnet_*``, ``conv_filters``). The log-std is always a
            network output, as SAC needs a state-dependent spread.
        q_model: Each Q network; the action joins the flat observation features.
    """

    lr: float | None = Field(default=None)  # type: ignore[assignment]
    actor_lr: float = Field(default=3e-4, gt=0.0)
    critic_lr: float = Field(default=3e-4, gt=0.0)
    alpha_lr: float = Field(default=3e-4, gt=0.0)
    train_batch_size: int = Field(default=256, ge=1)
    twin_q: bool = True
    tau: float = Field(default=0.005, gt=0.0, le=1.0)
    initial_alpha: float = Field(default=1.0, gt=0.0)
    target_entropy: float | Literal["auto"] = "auto"
    n_step: int = Field(default=1, ge=1)
    num_steps_sampled_before_learning_starts: int = Field(default=1500, ge=0)
    min_sample_timesteps_per_iteration: int = Field(default=1000, ge=1)
    training_intensity: float | None = Field(default=None, gt=0.0)
    replay_buffer_config: ReplayBufferConfig = Field(default_factory=ReplayBufferConfig)
    model: ModelConfig = Field(default_factory=_sac_model)
    q_model: ModelConfig = Field(default_factory=_sac_model)

    @field_validator("lr")
    @classmethod
    def _no_single_lr(cls, value: float | None) -> float | None:
        if value is not None:
            raise ValueError(
                "SAC has one learning rate per loss: set actor_lr, critic_lr, alpha_lr"
            )
        return value

    @field_validator("target_entropy", mode="before")
    @classmethod
    def _entropy(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)  # strict mode would refuse -1 for a float
        if isinstance(value, str) and value != "auto":
            raise ValueError("expected a float or 'auto' (= -dim(action space))")
        return value


class SACConfig(AlgorithmConfig):
    """Config for :class:`training.algorithms.sac.SAC` (Box action spaces with finite bounds).

    ``rollout_fragment_length="auto"`` samples 1 step per env per round.

    Example:
        >>> config = SACConfig().environment("Pendulum-v1").training(actor_lr=1e-3)
    """

    training_section = SACTrainingSection
    algo_class_path = "training.algorithms.sac.sac:SAC"

    @property
    def hyperparameters(self) -> SACTrainingSection:
        """The validated ``training()`` section (what the learner reads)."""
        section = self._values["training"]
        assert isinstance(section, SACTrainingSection)
        return section

    def validate(self) -> None:
        """The common checks, and prioritized replay with one learner only.

        Raises:
            ConfigError: For prioritized replay with data-parallel learners: each learner
                sees the TD errors of its slice of the batch only.
        """
        super().validate()
        if self.num_learners > 1 and self.hyperparameters.replay_buffer_config.prioritized:
            raise ConfigError(
                f"learners(num_learners={self.num_learners}) with replay_buffer_config="
                "{'prioritized': True}: the priorities need every row's TD error, and each "
                "learner computes its slice's; use uniform replay or num_learners=0"
            )

    def get_rollout_fragment_length(self) -> int:
        """Steps per env per sampling round (``"auto"``: 1)."""
        if self.rollout_fragment_length == "auto":
            return 1
        return int(self.rollout_fragment_length)
