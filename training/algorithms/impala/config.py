"""``IMPALAConfig``: IMPALA's hyper-parameters on top of :class:`AlgorithmConfig`.

Names and defaults follow RLlib's ``IMPALAConfig``: V-trace with both clips at 1,
``vf_loss_coeff=0.5``, ``entropy_coeff=0.01``, ``grad_clip=40``, ``lr=5e-4``, train batches of
500 env steps, fragments of 50 steps, two sample requests in flight per runner, weights
broadcast after every update.
"""

from __future__ import annotations

from pydantic import Field

from training.config import AlgorithmConfig
from training.config_sections import TrainingSection

__all__ = ["IMPALAConfig", "IMPALATrainingSection"]

DEFAULT_FRAGMENT_LENGTH = 50


class IMPALATrainingSection(TrainingSection):
    """IMPALA (Espeholt et al., 2018): an actor-critic learned from asynchronous fragments.

    Attributes:
        lr: Adam learning rate.
        train_batch_size: Env steps (fragment rows) per gradient step.
        grad_clip: Max global gradient norm; ``None`` disables clipping.
        vtrace: Correct for the runners' policy lag with V-trace; ``False`` treats the
            fragments as on-policy (every importance weight 1).
        vtrace_clip_rho_threshold: ``rho_bar``, the truncation of the value targets' weights.
        vtrace_clip_pg_rho_threshold: Truncation of the policy gradient's weights.
        vf_loss_coeff: Weight of the value loss.
        entropy_coeff: Weight of the entropy bonus.
        learner_queue_size: Train batches that may wait for the learner; when it is full the
            oldest is dropped (counted in the results) so the learner trains on fresh data.
        broadcast_interval: Send the weights to the runners after this many updates.
        min_sample_timesteps_per_iteration: Env steps taken in per ``train()`` call (at
            least); sampling never pauses between calls.
    """

    lr: float = Field(default=5e-4, gt=0.0)
    train_batch_size: int = Field(default=500, ge=1)
    grad_clip: float | None = Field(default=40.0, gt=0.0)
    vtrace: bool = True
    vtrace_clip_rho_threshold: float = Field(default=1.0, gt=0.0)
    vtrace_clip_pg_rho_threshold: float = Field(default=1.0, gt=0.0)
    vf_loss_coeff: float = Field(default=0.5, ge=0.0)
    entropy_coeff: float = Field(default=0.01, ge=0.0)
    learner_queue_size: int = Field(default=3, ge=1)
    broadcast_interval: int = Field(default=1, ge=1)
    min_sample_timesteps_per_iteration: int = Field(default=5000, ge=1)


class IMPALAConfig(AlgorithmConfig):
    """Config for :class:`training.algorithms.impala.IMPALA` (Discrete and Box actions).

    ``rollout_fragment_length="auto"`` is 50 steps per env; each remote runner keeps
    ``max_requests_in_flight_per_env_runner`` sample requests queued. With
    ``num_env_runners=0`` the local runner samples and the learner trains in turn.

    Example:
        >>> config = IMPALAConfig().environment("CartPole-v1").env_runners(num_env_runners=2)
    """

    training_section = IMPALATrainingSection
    algo_class_path = "training.algorithms.impala.impala:IMPALA"

    @property
    def hyperparameters(self) -> IMPALATrainingSection:
        """The validated ``training()`` section (what the learner reads)."""
        section = self._values["training"]
        assert isinstance(section, IMPALATrainingSection)
        return section

    def get_rollout_fragment_length(self) -> int:
        """Steps per env per sample request (``"auto"``: 50, RLlib's default)."""
        if self.rollout_fragment_length == "auto":
            return DEFAULT_FRAGMENT_LENGTH
        return int(self.rollout_fragment_length)
