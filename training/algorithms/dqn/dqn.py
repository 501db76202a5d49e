"""``DQN``: sample into a replay buffer, learn from replayed n-step transitions."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import gymnasium as gym
import torch

from training import metrics as m
from training.algorithm import Algorithm
from training.algorithms.dqn.config import DQNConfig
from training.algorithms.dqn.learner import DQNLearner
from training.algorithms.dqn.module import DQNModule, linear_epsilon
from training.checkpoints import flatten_optimizer_state, unflatten_optimizer_state
from training.config import AlgorithmConfig
from training.distributed import LOCAL
from training.multi_agent.algorithm import MultiAgentAlgorithm
from training.replay_buffers import ReplayBuffer, add_fragments, updates_per_round
from training.rl_module import RLModule

__all__ = ["DQN", "MultiAgentDQN"]


class DQN(Algorithm):
    """Deep Q-Network with double-Q, dueling heads, n-step returns and a target network."""

    config_class: ClassVar[type[AlgorithmConfig]] = DQNConfig
    name: ClassVar[str] = "DQN"
    supports_multi_agent: ClassVar[bool] = True
    learner_class: ClassVar[Any] = DQNLearner
    learner: DQNLearner

    @classmethod
    def build_module(
        cls,
        config: AlgorithmConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
    ) -> RLModule:
        """A (dueling) :class:`DQNModule`."""
        return DQNModule(
            observation_space,
            action_space,
            config.model,
            observation_filter=config.uses_observation_filter,
            dueling=config.dueling,
            epsilon=(config.epsilon_initial, config.epsilon_final, config.epsilon_timesteps),
        )

    def setup_learner(self) -> None:
        """Learner (unless learner actors do the learning) and the replay buffer."""
        if self.learner_group is None:
            self.learner = self.build_learner(self.config, self.module, self.device, LOCAL)
        self.replay_buffer = ReplayBuffer(self.config.replay_buffer_capacity, seed=self.config.seed)
        self._last_target_update = 0

    def training_step(self) -> dict[str, float]:
        """Sampling rounds with updates until ``min_sample_timesteps_per_iteration`` steps."""
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
                batches = [self.replay_buffer.sample(cfg.train_batch_size) for _ in range(rounds)]
                sync = lifetime - self._last_target_update >= cfg.target_network_update_freq
                if batches or sync:
                    results = self.learner_update("update_many", batches, sync)
                    for result in results:
                        for key, value in result.items():
                            stats[key] = stats.get(key, 0.0) + value
                    updates += len(results)
                    self.counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME] += (
                        len(results) * cfg.train_batch_size
                    )
                if sync:
                    self._last_target_update = lifetime
            self.sync_weights()
        metrics = {key: value / updates for key, value in stats.items()}
        metrics["num_updates"] = float(updates)
        metrics["epsilon"] = linear_epsilon(
            self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME],
            cfg.epsilon_initial,
            cfg.epsilon_final,
            cfg.epsilon_timesteps,
        )
        metrics["lr"] = float(cfg.lr)
        metrics["replay_buffer_size"] = float(self.replay_buffer.size)
        return metrics

    def learner_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Adam state and the target network (learner 0's: all learners agree)."""
        tensors, data = self.foreach_learner(_state_of)[0]
        data["last_target_update"] = self._last_target_update
        return tensors, data

    def set_learner_state(self, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
        """Restore Adam state and the target network (into every learner)."""
        self.foreach_learner(functools.partial(_restore, tensors=tensors, data=data))
        self._last_target_update = int(data["last_target_update"])


class MultiAgentDQN(MultiAgentAlgorithm, DQN):
    """DQN on a policy map: a replay buffer and a learner per trained policy."""

    def setup_policy_learners(self) -> None:
        """A replay buffer per trained policy (its agents' n-step transitions)."""
        cfg = self.config
        self.replay_buffers = {
            pid: ReplayBuffer(self.policy_configs[pid].replay_buffer_capacity, seed=cfg.seed)
            for pid in self.trained_policies
        }
        self._last_target_updates = dict.fromkeys(self.trained_policies, 0)

    def train_policies(self) -> dict[str, dict[str, float]]:
        """Sampling rounds with updates until ``min_sample_timesteps_per_iteration`` env steps.

        Each policy updates ``training_intensity`` times per agent step of its own agents
        (its replay ratio), from its own buffer; target networks sync on the lifetime env
        steps, as single-agent DQN's.
        """
        cfg = self.config
        sampled_this_iter = 0
        stats: dict[str, dict[str, float]] = {pid: {} for pid in self.trained_policies}
        updates = dict.fromkeys(self.trained_policies, 0)
        while sampled_this_iter < cfg.min_sample_timesteps_per_iteration:
            samples = self.sample_multi_agent(1)
            sampled_this_iter += sum(s.env_steps for s in samples)
            lifetime = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
            for pid, rounds in self.replay_rounds(samples, self.replay_buffers).items():
                pcfg = self.policy_configs[pid]
                buffer = self.replay_buffers[pid]
                batches = [buffer.sample(pcfg.train_batch_size) for _ in range(rounds)]
                sync = lifetime - self._last_target_updates[pid] >= pcfg.target_network_update_freq
                if batches or sync:
                    for result in self.learners[pid].update_many(batches, sync):
                        for key, value in result.items():
                            stats[pid][key] = stats[pid].get(key, 0.0) + value
                        updates[pid] += 1
                if sync:
                    self._last_target_updates[pid] = lifetime
            self.sync_weights()
        metrics = {}
        for pid in self.trained_policies:
            pcfg = self.policy_configs[pid]
            done = max(1, updates[pid])
            metrics[pid] = {key: value / done for key, value in stats[pid].items()}
            metrics[pid]["num_updates"] = float(updates[pid])
            metrics[pid]["epsilon"] = linear_epsilon(
                self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME],
                pcfg.epsilon_initial,
                pcfg.epsilon_final,
                pcfg.epsilon_timesteps,
            )
            metrics[pid]["replay_buffer_size"] = float(self.replay_buffers[pid].size)
        return metrics

    def policy_learner_state(self, pid: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Policy ``pid``'s Adam state and target network."""
        tensors, data = _state_of(self.learners[pid])
        data["last_target_update"] = self._last_target_updates[pid]
        return tensors, data

    def set_policy_learner_state(
        self, pid: str, tensors: dict[str, torch.Tensor], data: dict[str, Any]
    ) -> None:
        """Restore policy ``pid``'s Adam state and target network."""
        _restore(self.learners[pid], tensors, data)
        self._last_target_updates[pid] = int(data["last_target_update"])


DQN.multi_agent_class = MultiAgentDQN


def _state_of(learner: DQNLearner) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, data = flatten_optimizer_state(learner.optimizer.state_dict(), "optimizer")
    for key, value in learner.target.state_dict().items():
        tensors[f"target.{key}"] = value.detach().cpu().contiguous()
    return tensors, data


def _restore(learner: DQNLearner, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
    learner.optimizer.load_state_dict(unflatten_optimizer_state(tensors, data, "optimizer"))
    target = {k[len("target.") :]: v for k, v in tensors.items() if k.startswith("target.")}
    learner.target.load_state_dict(target)
