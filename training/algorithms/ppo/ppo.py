"""``PPO``: sample a train batch from the EnvRunners, then run the PPO learner on it."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import gymnasium as gym
import torch

from training import metrics as m
from training.algorithm import Algorithm
from training.algorithms.ppo.config import PPOConfig
from training.algorithms.ppo.learner import PPOLearner
from training.algorithms.ppo.module import PPOModule
from training.checkpoints import flatten_optimizer_state, unflatten_optimizer_state
from training.config import AlgorithmConfig
from training.distributed import LOCAL
from training.multi_agent.algorithm import MultiAgentAlgorithm
from training.rl_module import RLModule

__all__ = ["PPO", "MultiAgentPPO"]


class PPO(Algorithm):
    """Proximal Policy Optimization (clipped surrogate, GAE, minibatch epochs)."""

    config_class: ClassVar[type[AlgorithmConfig]] = PPOConfig
    name: ClassVar[str] = "PPO"
    supports_lstm: ClassVar[bool] = True
    supports_multi_agent: ClassVar[bool] = True
    learner_class: ClassVar[Any] = PPOLearner
    learner: PPOLearner

    @classmethod
    def build_module(
        cls,
        config: AlgorithmConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
    ) -> RLModule:
        """An actor-critic :class:`PPOModule`."""
        return PPOModule(
            observation_space,
            action_space,
            config.model,
            observation_filter=config.uses_observation_filter,
        )

    def setup_learner(self) -> None:
        """PPO learner on the module's device (unless learner actors do the learning)."""
        if self.learner_group is None:
            self.learner = self.build_learner(self.config, self.module, self.device, LOCAL)

    def current_lr(self, config: AlgorithmConfig | None = None) -> float:
        """Learning rate after the optional linear schedule (of ``config``: a policy's)."""
        cfg = config or self.config
        if cfg.lr_schedule_end is None:
            return float(cfg.lr)
        progress = min(
            1.0, self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] / cfg.lr_schedule_timesteps
        )
        return float(cfg.lr * (1.0 - progress * (1.0 - cfg.lr_schedule_end)))

    def training_step(self) -> dict[str, float]:
        """Sample ``train_batch_size`` env steps, update, merge filters, broadcast weights."""
        fragments = self.sample_fragments(self.config.train_batch_size)
        metrics: dict[str, float] = self.learner_update("update", fragments, self.current_lr())
        self.counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME] += sum(f.num_env_steps for f in fragments)
        self.sync_weights()
        return metrics

    def learner_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Adam state and the adaptive KL coefficient (learner 0's: all learners agree)."""
        return self.foreach_learner(_state_of)[0]

    def set_learner_state(self, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
        """Restore Adam state and the KL coefficient (into every learner)."""
        self.foreach_learner(functools.partial(_restore, tensors=tensors, data=data))


class MultiAgentPPO(MultiAgentAlgorithm, PPO):
    """PPO on a policy map: each trained policy's learner on its agents' trajectories."""

    def train_policies(self) -> dict[str, dict[str, float]]:
        """Sample ``train_batch_size`` env steps, update each trained policy, broadcast."""
        samples = self.sample_multi_agent(self.config.train_batch_size)
        metrics = {}
        for pid in self.trained_policies:
            fragments = self.fragments_of(samples, pid)
            if fragments:  # its agents may not have acted (they joined no episode yet)
                lr = self.current_lr(self.policy_configs[pid])
                metrics[pid] = self.learners[pid].update(fragments, lr)
        self.counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME] += sum(s.env_steps for s in samples)
        self.sync_weights()
        return metrics

    def policy_learner_state(self, pid: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Policy ``pid``'s Adam state and adaptive KL coefficient."""
        return _state_of(self.learners[pid])

    def set_policy_learner_state(
        self, pid: str, tensors: dict[str, torch.Tensor], data: dict[str, Any]
    ) -> None:
        """Restore policy ``pid``'s Adam state and KL coefficient."""
        _restore(self.learners[pid], tensors, data)


PPO.multi_agent_class = MultiAgentPPO


def _state_of(learner: PPOLearner) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, data = flatten_optimizer_state(learner.optimizer.state_dict(), "optimizer")
    data["kl_coeff"] = learner.kl_coeff
    return tensors, data


def _restore(learner: PPOLearner, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
    learner.optimizer.load_state_dict(unflatten_optimizer_state(tensors, data, "optimizer"))
    learner.kl_coeff = float(data["kl_coeff"])
