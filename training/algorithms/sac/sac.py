"""``SAC``: sample into a replay buffer, learn the soft actor-critic from replayed transitions."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import torch

from training import metrics as m
from training.algorithm import Algorithm
from training.algorithms.sac.config import SACConfig
from training.algorithms.sac.learner import SACLearner
from training.algorithms.sac.module import SACModule
from training.checkpoints import flatten_optimizer_state, unflatten_optimizer_state
from training.config import AlgorithmConfig
from training.replay_buffers import add_fragments, make_replay_buffer, updates_per_round
from training.rl_module import RLModule

__all__ = ["SAC"]

_OPTIMIZERS = ("critic_optimizer", "actor_optimizer", "alpha_optimizer")


class SAC(Algorithm):
    """Soft Actor-Critic with twin Q networks, Polyak targets and automatic entropy tuning."""

    config_class: ClassVar[type[AlgorithmConfig]] = SACConfig
    name: ClassVar[str] = "SAC"
    learner: SACLearner

    @classmethod
    def build_module(
        cls,
        config: AlgorithmConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
    ) -> RLModule:
        """A :class:`SACModule` (raises ``ConfigError`` for an action space SAC cannot use)."""
        return SACModule(
            observation_space,
            action_space,
            config.model,
            config.q_model,
            observation_filter=config.uses_observation_filter,
            twin_q=config.twin_q,
        )

    def setup_learner(self) -> None:
        """Learner (with the target critics) and the replay buffer."""
        assert isinstance(self.module, SACModule)
        assert isinstance(self.config, SACConfig)
        hyper = self.config.hyperparameters
        self.learner = SACLearner(self.module, hyper, self.device)
        buffer = hyper.replay_buffer_config
        self.replay_buffer = make_replay_buffer(
            buffer.capacity,
            prioritized=buffer.prioritized,
            alpha=buffer.alpha,
            beta=buffer.beta,
            seed=self.config.seed,
        )

    def training_step(self) -> dict[str, float]:
        """Sampling rounds, each followed by updates, until the iteration's env steps."""
        cfg = self.config
        sampled_this_iter = 0
        stats: dict[str, float] = {}
        updates = 0
        while sampled_this_iter < cfg.min_sample_timesteps_per_iteration:
            fragments = self.sample_fragments(1)
            sampled = sum(f.num_env_steps for f in fragments)
            sampled_this_iter += sampled
            add_fragments(self.replay_buffer, fragments, cfg.gamma, cfg.n_step)
            lifetime = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
            if lifetime >= cfg.num_steps_sampled_before_learning_starts:
                rounds = updates_per_round(sampled, cfg.training_intensity, cfg.train_batch_size)
                for _ in range(rounds):
                    batch = self.replay_buffer.sample(cfg.train_batch_size)
                    result = self.learner.update(batch)
                    if batch.indices is not None:
                        self.replay_buffer.update_priorities(batch.indices, result.td_errors)
                    for key, value in result.metrics.items():
                        stats[key] = stats.get(key, 0.0) + value
                    updates += 1
                    self.counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME] += cfg.train_batch_size
            self.sync_weights()
        metrics = {key: value / updates for key, value in stats.items()}
        metrics["num_updates"] = float(updates)
        metrics["alpha_value"] = self.learner.alpha
        metrics["replay_buffer_size"] = float(self.replay_buffer.size)
        return metrics

    def learner_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The three Adam states, ``log(alpha)`` and the target critics."""
        tensors: dict[str, torch.Tensor] = {}
        data: dict[str, Any] = {}
        for name in _OPTIMIZERS:
            t, data[name] = flatten_optimizer_state(getattr(self.learner, name).state_dict(), name)
            tensors.update(t)
        tensors["log_alpha"] = self.learner.log_alpha.detach().cpu().reshape(1).clone()
        for key, value in self.learner.target_q_networks.state_dict().items():
            tensors[f"target.{key}"] = value.detach().cpu().contiguous()
        return tensors, data

    def set_learner_state(self, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
        """Restore what :meth:`learner_state` wrote."""
        for name in _OPTIMIZERS:
            getattr(self.learner, name).load_state_dict(
                unflatten_optimizer_state(tensors, data[name], name)
            )
        with torch.no_grad():
            self.learner.log_alpha.copy_(tensors["log_alpha"].reshape(()))
        target = {k[len("target.") :]: v for k, v in tensors.items() if k.startswith("target.")}
        self.learner.target_q_networks.load_state_dict(target)
