"""``SAC``: sample into a replay buffer, learn the soft actor-critic from replayed transitions."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import gymnasium as gym
import torch

from training import metrics as m
from training.algorithm import Algorithm
from training.algorithms.sac.config import SACConfig
from training.algorithms.sac.learner import SACLearner, UpdateResult
from training.algorithms.sac.module import SACModule
from training.checkpoints import flatten_optimizer_state, unflatten_optimizer_state
from training.config import AlgorithmConfig
from training.distributed import LOCAL
from training.multi_agent.algorithm import MultiAgentAlgorithm
from training.replay_buffers import add_fragments, make_replay_buffer, updates_per_round
from training.rl_module import RLModule

__all__ = ["SAC", "MultiAgentSAC"]

_OPTIMIZERS = ("critic_optimizer", "actor_optimizer", "alpha_optimizer")


class SAC(Algorithm):
    """Soft Actor-Critic with twin Q networks, Polyak targets and automatic entropy tuning."""

    config_class: ClassVar[type[AlgorithmConfig]] = SACConfig
    name: ClassVar[str] = "SAC"
    supports_multi_agent: ClassVar[bool] = True
    learner_class: ClassVar[Any] = SACLearner
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
        """Learner (unless learner actors do the learning) and the replay buffer."""
        assert isinstance(self.config, SACConfig)
        if self.learner_group is None:
            self.learner = self.build_learner(self.config, self.module, self.device, LOCAL)
        buffer = self.config.hyperparameters.replay_buffer_config
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
                for result in self._updates(rounds):
                    for key, value in result.metrics.items():
                        stats[key] = stats.get(key, 0.0) + value
                    updates += 1
                    self.counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME] += cfg.train_batch_size
            self.sync_weights()
        metrics = {key: value / updates for key, value in stats.items()}
        metrics["num_updates"] = float(updates)
        metrics["alpha_value"] = self.foreach_learner(_alpha_of)[0]
        metrics["replay_buffer_size"] = float(self.replay_buffer.size)
        return metrics

    def _updates(self, rounds: int) -> list[UpdateResult]:
        """``rounds`` updates on replayed batches.

        Prioritized replay samples each batch after the last one's priorities are in (one
        learner: several data-parallel learners see a slice of the TD errors each, and are
        refused with it); uniform replay sends all of a round's batches in one call.
        """
        size = self.config.train_batch_size
        if not self.config.replay_buffer_config.prioritized:
            if rounds == 0:
                return []
            batches = [self.replay_buffer.sample(size) for _ in range(rounds)]
            results: list[UpdateResult] = self.learner_update("update_many", batches)
            return results
        results = []
        for _ in range(rounds):
            batch = self.replay_buffer.sample(size)
            result = self.learner_update("update", batch)
            assert batch.indices is not None  # a prioritized buffer's batch
            self.replay_buffer.update_priorities(batch.indices, result.td_errors)
            results.append(result)
        return results

    def learner_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The three Adam states, ``log(alpha)`` and the target critics.

        Learner 0's: with data-parallel learners all agree.
        """
        state: tuple[dict[str, torch.Tensor], dict[str, Any]] = self.foreach_learner(_state_of)[0]
        return state

    def set_learner_state(self, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
        """Restore what :meth:`learner_state` wrote (into every learner)."""
        self.foreach_learner(functools.partial(_restore, tensors=tensors, data=data))


class MultiAgentSAC(MultiAgentAlgorithm, SAC):
    """SAC on a policy map: a replay buffer and a learner per trained policy."""

    def setup_policy_learners(self) -> None:
        """A replay buffer per trained policy (its agents' n-step transitions)."""
        self.replay_buffers = {}
        for pid in self.trained_policies:
            buffer = self.policy_configs[pid].replay_buffer_config
            self.replay_buffers[pid] = make_replay_buffer(
                buffer.capacity,
                prioritized=buffer.prioritized,
                alpha=buffer.alpha,
                beta=buffer.beta,
                seed=self.config.seed,
            )

    def train_policies(self) -> dict[str, dict[str, float]]:
        """Sampling rounds with updates until ``min_sample_timesteps_per_iteration`` env steps.

        Each policy updates ``training_intensity`` times per agent step of its own agents,
        from its own buffer (prioritized: each batch after the last one's priorities).
        """
        cfg = self.config
        sampled_this_iter = 0
        stats: dict[str, dict[str, float]] = {pid: {} for pid in self.trained_policies}
        updates = dict.fromkeys(self.trained_policies, 0)
        while sampled_this_iter < cfg.min_sample_timesteps_per_iteration:
            samples = self.sample_multi_agent(1)
            sampled_this_iter += sum(s.env_steps for s in samples)
            for pid, rounds in self.replay_rounds(samples, self.replay_buffers).items():
                for result in self._policy_updates(pid, rounds):
                    for key, value in result.metrics.items():
                        stats[pid][key] = stats[pid].get(key, 0.0) + value
                    updates[pid] += 1
            self.sync_weights()
        metrics = {}
        for pid in self.trained_policies:
            done = max(1, updates[pid])
            metrics[pid] = {key: value / done for key, value in stats[pid].items()}
            metrics[pid]["num_updates"] = float(updates[pid])
            metrics[pid]["alpha_value"] = _alpha_of(self.learners[pid])
            metrics[pid]["replay_buffer_size"] = float(self.replay_buffers[pid].size)
        return metrics

    def _policy_updates(self, pid: str, rounds: int) -> list[UpdateResult]:
        buffer, learner = self.replay_buffers[pid], self.learners[pid]
        size = self.policy_configs[pid].train_batch_size
        if not self.policy_configs[pid].replay_buffer_config.prioritized:
            results: list[UpdateResult] = learner.update_many(
                [buffer.sample(size) for _ in range(rounds)]
            )
            return results
        results = []
        for _ in range(rounds):
            batch = buffer.sample(size)
            result = learner.update(batch)
            assert batch.indices is not None
            buffer.update_priorities(batch.indices, result.td_errors)
            results.append(result)
        return results

    def policy_learner_state(self, pid: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Policy ``pid``'s three Adam states, ``log(alpha)`` and target critics."""
        return _state_of(self.learners[pid])

    def set_policy_learner_state(
        self, pid: str, tensors: dict[str, torch.Tensor], data: dict[str, Any]
    ) -> None:
        """Restore policy ``pid``'s learner state."""
        _restore(self.learners[pid], tensors, data)


SAC.multi_agent_class = MultiAgentSAC


def _alpha_of(learner: SACLearner) -> float:
    return learner.alpha


def _state_of(learner: SACLearner) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    data: dict[str, Any] = {}
    for name in _OPTIMIZERS:
        t, data[name] = flatten_optimizer_state(getattr(learner, name).state_dict(), name)
        tensors.update(t)
    tensors["log_alpha"] = learner.log_alpha.detach().cpu().reshape(1).clone()
    for key, value in learner.target_q_networks.state_dict().items():
        tensors[f"target.{key}"] = value.detach().cpu().contiguous()
    return tensors, data


def _restore(learner: SACLearner, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
    for name in _OPTIMIZERS:
        getattr(learner, name).load_state_dict(unflatten_optimizer_state(tensors, data[name], name))
    with torch.no_grad():
        learner.log_alpha.copy_(tensors["log_alpha"].reshape(()).to(learner.device))
    target = {k[len("target.") :]: v for k, v in tensors.items() if k.startswith("target.")}
    learner.target_q_networks.load_state_dict(target)
