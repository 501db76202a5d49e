"""``MultiAgentAlgorithm``: an algorithm that trains a policy map (one module per policy).

``PPOConfig().multi_agent(...).build()`` builds :class:`~training.algorithms.ppo.ppo.PPO`'s
multi-agent class (``PPO.multi_agent_class``), which is this base plus PPO's own update per
policy. Runners are :class:`~training.multi_agent.runner.MultiAgentEnvRunner` s (local, or
Ray actors through the same :class:`~training.env_runner_group.EnvRunnerGroup`); each
policy that trains has its own learner in the driver, fed the fragments of its agents.

Results (RLlib's keys): ``learners/<policy_id>/...`` per trained policy;
``env_runners/episode_return_mean`` summed over an episode's agents,
``env_runners/agent_episode_returns_mean/<agent_id>`` and
``env_runners/module_episode_returns_mean/<policy_id>``; env steps and agent steps counted
both.
"""

from __future__ import annotations

import abc
import os
import time
from collections import defaultdict, deque
from typing import Any

import numpy as np
import torch

from training import metrics as m
from training.algorithm import SMOOTHING_EPISODES, Algorithm
from training.distributed import LOCAL
from training.env_runner_group import EnvRunnerGroup
from training.fragments import Fragment
from training.multi_agent.checkpoints import (
    read_multi_agent_checkpoint,
    write_multi_agent_checkpoint,
)
from training.multi_agent.runner import MultiAgentEnvRunner, MultiAgentSample
from training.multi_agent.spec import PolicySpec, policy_config
from training.policy import Policy
from training.preprocessing import RunningStat
from training.replay_buffers import add_fragments, updates_per_round
from training.rl_module import RLModule

__all__ = ["MultiAgentAlgorithm"]


class MultiAgentAlgorithm(Algorithm):
    """The policy map's machinery; subclasses add :meth:`train_policies`.

    Attributes:
        policy_specs: Every policy with its spaces (resolved from the env at build).
        modules: The driver's module of each policy (what runners, checkpoints and
            ``get_policy`` read).
        learners: The learner of each trained policy.
        trained_policies: The ids of the policies that train.
    """

    policy_specs: dict[str, PolicySpec]
    modules: dict[str, RLModule]
    learners: dict[str, Any]
    trained_policies: list[str]

    def setup(self, config: dict[str, Any]) -> None:
        """Validate, make the local runner (spaces), the modules, learners and runners."""
        self._setup_common(config)
        self.env_runner = MultiAgentEnvRunner(self.config, 0)  # type: ignore[assignment]
        self.policy_specs = self.env_runner.policies  # type: ignore[attr-defined]
        self.trained_policies = self.config.multi_agent_settings.trained()
        self.policy_configs = {
            pid: policy_config(self.config, spec) for pid, spec in self.policy_specs.items()
        }
        self.modules = {
            pid: self.build_module(self.policy_configs[pid], *spec.spaces).to(self.device)
            for pid, spec in self.policy_specs.items()
        }
        self.learner_group = None
        self.learners = {
            pid: self.build_learner(self.policy_configs[pid], self.modules[pid], self.device, LOCAL)
            for pid in self.trained_policies
        }
        self.setup_policy_learners()
        self.env_runner_group = EnvRunnerGroup(self.config, self.env_runner)
        self.filter_stats = {
            pid: RunningStat(module.preprocessor.flat_dim)
            for pid, module in self.modules.items()
            if module.obs_filter.enabled
        }
        """Each filtered policy's merged running observation statistics."""
        self.counters: dict[str, int] = {
            m.NUM_ENV_STEPS_SAMPLED_LIFETIME: 0,
            m.NUM_AGENT_STEPS_SAMPLED_LIFETIME: 0,
            m.NUM_EPISODES_LIFETIME: 0,
            m.NUM_ENV_STEPS_TRAINED_LIFETIME: 0,
        }
        self._returns: deque[float] = deque(maxlen=SMOOTHING_EPISODES)
        self._lengths: deque[int] = deque(maxlen=SMOOTHING_EPISODES)
        self._agent_returns: dict[str, deque[float]] = defaultdict(
            lambda: deque(maxlen=SMOOTHING_EPISODES)
        )
        self._module_returns: dict[str, deque[float]] = defaultdict(
            lambda: deque(maxlen=SMOOTHING_EPISODES)
        )
        self._evaluation_runner = None
        self.sync_weights()

    # ----------------------------------------------------------------- subclass hooks
    def setup_learner(self) -> None:
        """Unused: :meth:`setup` builds a learner per trained policy."""

    def setup_policy_learners(self) -> None:
        """Per-policy state beside the learners (a replay buffer each, say); none by default."""

    @abc.abstractmethod
    def train_policies(self) -> dict[str, dict[str, float]]:
        """Sample and update every trained policy; its learner metrics by policy id."""
        raise NotImplementedError

    def training_step(self) -> dict[str, float]:
        """Unused: :meth:`step` runs :meth:`train_policies`."""
        raise NotImplementedError

    # ----------------------------------------------------------------- sampling
    def sample_multi_agent(self, min_env_steps: int) -> list[MultiAgentSample]:
        """Sample from the runners until at least ``min_env_steps`` env steps."""
        samples: list[MultiAgentSample] = []
        steps = 0
        while steps < min_env_steps:
            new: list[MultiAgentSample] = self.env_runner_group.sample()  # type: ignore[assignment]
            samples += new
            steps += sum(s.env_steps for s in new)
        self.record_multi_agent(samples)
        return samples

    def record_multi_agent(self, samples: list[MultiAgentSample]) -> None:
        """Count samples: env and agent steps, finished episodes, returns for the results."""
        for sample in samples:
            self._returns.extend(sample.episode_returns)
            self._lengths.extend(sample.episode_lengths)
            for agent, values in sample.agent_episode_returns.items():
                self._agent_returns[agent].extend(values)
            for pid, values in sample.module_episode_returns.items():
                self._module_returns[pid].extend(values)
            self.counters[m.NUM_EPISODES_LIFETIME] += len(sample.episode_returns)
            self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] += sample.env_steps
            self.counters[m.NUM_AGENT_STEPS_SAMPLED_LIFETIME] += sample.agent_steps

    def replay_rounds(
        self, samples: list[MultiAgentSample], buffers: dict[str, Any]
    ) -> dict[str, int]:
        """Off-policy algorithms: each trained policy's transitions into its replay buffer.

        Returns:
            The rounds of updates each policy is due (``training_intensity`` per agent step
            of its own agents), for the policies whose learning has started.
        """
        lifetime = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        rounds = {}
        for pid in self.trained_policies:
            pcfg = self.policy_configs[pid]
            fragments = self.fragments_of(samples, pid)
            add_fragments(buffers[pid], fragments, pcfg.gamma, pcfg.n_step)
            if lifetime >= pcfg.num_steps_sampled_before_learning_starts:
                agent_steps = sum(f.num_env_steps for f in fragments)
                rounds[pid] = updates_per_round(
                    agent_steps, pcfg.training_intensity, pcfg.train_batch_size
                )
        return rounds

    @staticmethod
    def fragments_of(samples: list[MultiAgentSample], pid: str) -> list[Fragment]:
        """Policy ``pid``'s fragments in ``samples`` (its agents' trajectories)."""
        return [s.fragments[pid] for s in samples if pid in s.fragments]

    # ----------------------------------------------------------------- results
    def step(self) -> dict[str, Any]:
        """One iteration: :meth:`train_policies`, then the multi-agent results."""
        start = time.perf_counter()
        before = dict(self.counters)
        learner_metrics = self.train_policies()
        elapsed = time.perf_counter() - start
        sampled = (
            self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
            - before[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        )
        returns = list(self._returns)
        runners: dict[str, Any] = {
            **m.episode_summary(returns, list(self._lengths)),
            m.NUM_EPISODES: self.counters[m.NUM_EPISODES_LIFETIME]
            - before[m.NUM_EPISODES_LIFETIME],
            m.NUM_ENV_STEPS_SAMPLED: sampled,
            m.NUM_AGENT_STEPS_SAMPLED: self.counters[m.NUM_AGENT_STEPS_SAMPLED_LIFETIME]
            - before[m.NUM_AGENT_STEPS_SAMPLED_LIFETIME],
            m.AGENT_EPISODE_RETURNS_MEAN: {
                agent: float(np.mean(values)) for agent, values in self._agent_returns.items()
            },
            m.MODULE_EPISODE_RETURNS_MEAN: {
                pid: float(np.mean(values)) for pid, values in self._module_returns.items()
            },
        }
        result: dict[str, Any] = {
            m.ENV_RUNNER_RESULTS: runners,
            m.LEARNER_RESULTS: learner_metrics,
            m.NUM_HEALTHY_ENV_RUNNERS: self.env_runner_group.num_healthy_remote_env_runners,
            m.NUM_REMOTE_ENV_RUNNERS: self.env_runner_group.num_remote_env_runners,
            m.NUM_ENV_RUNNER_RESTARTS: self.env_runner_group.num_restarts,
            m.NUM_ENV_STEPS_SAMPLED_THROUGHPUT: sampled / elapsed if elapsed > 0 else 0.0,
            **self.counters,
            **self.iteration_results(),
        }
        interval = self.config.evaluation_interval
        if interval is not None and (self.iteration + 1) % interval == 0:
            result[m.EVALUATION_RESULTS] = self.evaluate()
        return result

    # ----------------------------------------------------------------- weights and policies
    def sync_weights(self, weights_version: int | None = None) -> None:
        """Merge the runners' filter statistics per policy, then broadcast module states."""
        if self.filter_stats:
            for deltas in self.env_runner_group.get_filter_deltas():
                for pid, delta in deltas.items():
                    self.filter_stats[pid].merge(RunningStat.from_json(delta))
            for pid, stat in self.filter_stats.items():
                self.modules[pid].obs_filter.set_stats(stat)
        self.env_runner_group.sync_weights(
            self.get_weights(),
            self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME],
            weights_version,
        )

    def _policy_id(self, policy_id: str | None) -> str:
        if policy_id is None or (policy_id == m.DEFAULT_POLICY_ID and len(self.modules) == 1):
            if len(self.modules) == 1:
                return next(iter(self.modules))
            raise ValueError(f"policy_id: one of {sorted(self.modules)}")
        if policy_id not in self.modules:
            raise ValueError(f"policy_id {policy_id!r}: no such policy; {sorted(self.modules)}")
        return policy_id

    def get_policy(self, policy_id: str | None = m.DEFAULT_POLICY_ID) -> Policy:
        """Policy ``policy_id``: its module, preprocessing and distributions."""
        pid = self._policy_id(policy_id)
        return Policy(
            self.modules[pid],
            self.device,
            explore_default=self.config.explore,
            timestep=self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME],
        )

    def get_weights(  # type: ignore[override]
        self, policy_ids: list[str] | None = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """Each policy's module state as numpy arrays (``policy_ids``: only these)."""
        chosen = list(self.modules) if policy_ids is None else policy_ids
        return {
            pid: {k: v.detach().cpu().numpy() for k, v in self.modules[pid].state_dict().items()}
            for pid in (self._policy_id(p) for p in chosen)
        }

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Load ``{policy_id: module state}`` and broadcast it to every runner."""
        for pid, state in weights.items():
            tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}
            self.modules[self._policy_id(pid)].load_state_dict(tensors)
        self.sync_weights()

    def compute_single_action(
        self,
        observation: Any,
        state: list[Any] | None = None,
        prev_action: Any = None,
        prev_reward: float | None = None,
        explore: bool | None = None,
        policy_id: str | None = None,
    ) -> Any:
        """Policy ``policy_id``'s action for one observation."""
        return self.get_policy(policy_id).compute_single_action(
            observation, state, prev_action, prev_reward, explore=explore
        )

    def compute_actions(
        self,
        observations: Any,
        state_batches: list[Any] | None = None,
        prev_action_batch: Any = None,
        prev_reward_batch: Any = None,
        explore: bool | None = None,
        policy_id: str | None = None,
    ) -> Any:
        """Policy ``policy_id``'s actions for a batch of observations."""
        return self.get_policy(policy_id).compute_actions(
            observations, state_batches, prev_action_batch, prev_reward_batch, explore=explore
        )

    def compute_agent_actions(
        self, observations: dict[Any, Any], explore: bool | None = None
    ) -> dict[Any, Any]:
        """An action per agent of an observation dict, each from the policy mapped to it.

        The mapping function is asked with ``episode=None`` (as when the policies' spaces
        were resolved at build).
        """
        mapping = self.config.multi_agent_settings.mapping()
        return {
            agent: self.get_policy(mapping(agent, None)).compute_single_action(obs, explore=explore)
            for agent, obs in observations.items()
        }

    # ----------------------------------------------------------------- checkpoints
    def learner_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Unused: a policy map saves each learner's state (:meth:`policy_learner_state`)."""
        raise NotImplementedError

    def set_learner_state(self, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
        """Unused: see :meth:`set_policy_learner_state`."""
        raise NotImplementedError

    @abc.abstractmethod
    def policy_learner_state(self, pid: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Trained policy ``pid``'s learner tensors and JSON state, for checkpoints."""
        raise NotImplementedError

    @abc.abstractmethod
    def set_policy_learner_state(
        self, pid: str, tensors: dict[str, torch.Tensor], data: dict[str, Any]
    ) -> None:
        """Restore what :meth:`policy_learner_state` returned."""
        raise NotImplementedError

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """Write the policy map's checkpoint atomically (a module file per policy)."""
        write_multi_agent_checkpoint(
            checkpoint_dir,
            algorithm=self.name,
            config=self.config.to_json_dict(),
            policies=self.policy_specs,
            trained=self.trained_policies,
            mapping=self.config.multi_agent_settings.policy_mapping_fn,
            modules=self.modules,
            learner_states={pid: self.policy_learner_state(pid) for pid in self.trained_policies},
            filter_states={pid: stat.to_json() for pid, stat in self.filter_stats.items()},
            iteration=self.iteration,
            counters=dict(self.counters),
            time_total_s=self._time_total,
        )

    def load_checkpoint(self, checkpoint: str | dict[str, Any] | None) -> None:
        """Verify a policy map's checkpoint and load this algorithm's policies from it."""
        if not isinstance(checkpoint, str | os.PathLike):
            raise TypeError(f"expected a checkpoint directory, got {type(checkpoint).__name__}")
        contents = read_multi_agent_checkpoint(checkpoint, sorted(self.modules))
        if contents.metadata["algorithm"] != self.name:
            raise ValueError(
                f"checkpoint {checkpoint} is a {contents.metadata['algorithm']} checkpoint; "
                f"this algorithm is {self.name}"
            )
        for pid, state in contents.module_states.items():
            self.modules[pid].load_state_dict(state)
        for pid, (tensors, data) in contents.learner_states.items():
            if pid in self.learners:
                self.set_policy_learner_state(pid, tensors, data)
        for pid, state in contents.filter_states.items():
            if pid in self.filter_stats:
                self.filter_stats[pid] = RunningStat.from_json(state)
        self.env_runner_group.get_filter_deltas()  # statistics gathered before the load
        for key in self.counters:
            self.counters[key] = int(contents.metadata["counters"].get(key, 0))
        self._iteration = int(contents.metadata["iteration"])
        self._time_total = float(contents.metadata.get("time_total_s", 0.0))
        self._timesteps_total = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]  # type: ignore[assignment]
        self.sync_weights()

    def evaluate(self) -> dict[str, Any]:
        """Play ``evaluation_duration`` episodes with the current policies (one env copy).

        Each evaluation starts from the same seeded initial state (when a seed is set), so
        successive evaluations compare policies, not luck.
        """
        if self._evaluation_runner is None:
            eval_config = self.config.copy()
            eval_config.update_from_dict({"num_envs_per_env_runner": 1, "output": None})
            self._evaluation_runner = MultiAgentEnvRunner(eval_config, runner_index=1_000_000)  # type: ignore[assignment]
        runner: MultiAgentEnvRunner = self._evaluation_runner  # type: ignore[assignment]
        runner.set_weights(self.get_weights())
        runner.reset()
        samples: list[MultiAgentSample] = []
        while sum(len(s.episode_returns) for s in samples) < self.config.evaluation_duration:
            samples.append(runner.sample(256, explore=self.config.evaluation_explore))
        runner.get_filter_delta()  # evaluation never feeds the filters
        duration = self.config.evaluation_duration
        returns = [r for s in samples for r in s.episode_returns][:duration]
        lengths = [n for s in samples for n in s.episode_lengths][:duration]
        per_agent: dict[str, list[float]] = defaultdict(list)
        per_module: dict[str, list[float]] = defaultdict(list)
        for sample in samples:
            for agent, values in sample.agent_episode_returns.items():
                per_agent[agent].extend(values)
            for pid, values in sample.module_episode_returns.items():
                per_module[pid].extend(values)
        return {
            m.ENV_RUNNER_RESULTS: {
                **m.episode_summary(returns, lengths),
                m.NUM_EPISODES: len(returns),
                m.AGENT_EPISODE_RETURNS_MEAN: {
                    a: float(np.mean(v[:duration])) for a, v in per_agent.items()
                },
                m.MODULE_EPISODE_RETURNS_MEAN: {
                    p: float(np.mean(v[:duration])) for p, v in per_module.items()
                },
            }
        }
