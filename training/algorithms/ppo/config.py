"""``PPOConfig``: PPO's hyper-parameters on top of :class:`training.config.AlgorithmConfig`."""

from __future__ import annotations

from pydantic import Field

from training.config import AlgorithmConfig
from training.config_sections import TrainingSection

__all__ = ["PPOConfig", "PPOTrainingSection"]


class PPOTrainingSection(TrainingSection):
    """PPO hyper-parameters (Schulman et al., 2017) with GAE (Schulman et al., 2016).

    Attributes:
        lambda_: GAE's lambda (bias/variance trade-off of the advantage estimate).
        clip_param: Surrogate objective's clip range epsilon.
        vf_clip_param: Clip range for the value prediction around its old value (PPO2-style);
            ``None`` disables value clipping.
        vf_loss_coeff: Weight of the value loss.
        entropy_coeff: Weight of the entropy bonus.
        kl_coeff: Initial weight of an adaptive KL penalty; 0 disables it.
        kl_target: Target KL of the adaptive penalty.
        minibatch_size: Rows per SGD minibatch (at most the rows collected).
        num_epochs: Passes over the train batch per iteration.
        normalize_advantages: Normalise advantages per minibatch.
        lr_schedule_end: Linearly anneal ``lr`` to ``lr * lr_schedule_end`` over
            ``lr_schedule_timesteps`` env steps; ``None`` keeps ``lr`` constant.
        lr_schedule_timesteps: Horizon of the linear annealing.
    """

    lr: float = Field(default=3e-4, gt=0.0)
    train_batch_size: int = Field(default=4000, ge=1)
    grad_clip: float | None = Field(default=0.5, gt=0.0)
    lambda_: float = Field(default=0.95, ge=0.0, le=1.0)
    clip_param: float = Field(default=0.2, gt=0.0)
    vf_clip_param: float | None = Field(default=None, gt=0.0)
    vf_loss_coeff: float = Field(default=0.5, ge=0.0)
    entropy_coeff: float = Field(default=0.0, ge=0.0)
    kl_coeff: float = Field(default=0.0, ge=0.0)
    kl_target: float = Field(default=0.01, gt=0.0)
    minibatch_size: int = Field(default=128, ge=1)
    num_epochs: int = Field(default=10, ge=1)
    normalize_advantages: bool = True
    lr_schedule_end: float | None = Field(default=None, ge=0.0, le=1.0)
    lr_schedule_timesteps: int = Field(default=1_000_000, ge=1)


class PPOConfig(AlgorithmConfig):
    """Config for :class:`training.algorithms.ppo.PPO`.

    Example:
        >>> config = PPOConfig().environment("CartPole-v1").training(lr=1e-3)
    """

    training_section = PPOTrainingSection
    algo_class_path = "training.algorithms.ppo.ppo:PPO"

    @property
    def hyperparameters(self) -> PPOTrainingSection:
        """The validated ``training()`` section (what the learner reads)."""
        section = self._values["training"]
        assert isinstance(section, PPOTrainingSection)
        return section
