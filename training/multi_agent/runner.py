"""``MultiAgentEnvRunner``: samples several copies of a multi-agent env, a module per policy.

Each step, the agents that hold an observation act: they are grouped by the policy the
mapping gave them (asked once per agent and episode), each policy computes the actions of all
its agents in all copies in one forward pass, and every copy steps with its action dict. So a
runner vectorises a multi-agent env over ``num_envs_per_env_runner`` copies, which RLlib's
runners cannot.

Every agent's steps are kept as :class:`~training.multi_agent.segments.Segment` s, and a
fragment is one :class:`~training.fragments.Fragment` per policy
(:func:`~training.multi_agent.segments.pack`): the learners train on agent trajectories
exactly as on single-agent ones. The env is held to the multi-agent contract as it steps
(:class:`~training.multi_agent.env.ContractChecker`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import gymnasium as gym
import numpy as np
import torch

from formats.leaves import obs_to_leaves
from training import columns as cols
from training.config_validation import ConfigError
from training.fragments import Fragment
from training.multi_agent.env import (
    ALL,
    AgentID,
    ContractChecker,
    MultiAgentEnv,
    multi_agent_creator,
)
from training.multi_agent.segments import Segment, pack
from training.multi_agent.spec import (
    MultiAgentSection,
    PolicySpec,
    policy_config,
    resolve_policies,
)
from training.preprocessing import RunningStat
from training.rl_module import RLModule
from training.traces import TraceWriter

__all__ = ["MultiAgentEnvRunner", "MultiAgentSample"]

Acting = dict[AgentID, tuple[list[np.ndarray], Any, dict[str, Any]]]
"""A copy's acting agents: the leaves each saw, its action, its module's extras."""
Returned = tuple[
    dict[AgentID, Any], dict[AgentID, Any], dict[Any, Any], dict[Any, Any], dict[AgentID, Any]
]

logger = logging.getLogger(__name__)


class MultiAgentSample(NamedTuple):
    """What one sampling call of a multi-agent runner returns.

    Attributes:
        fragments: One fragment per policy that acted (its agents' trajectories as columns).
        env_steps: Env steps taken (each copy's step counts once).
        agent_steps: Agent steps taken (each acting agent counts once per env step).
        episode_returns: Returns of the episodes that ended, summed over their agents.
        episode_lengths: Their lengths in env steps.
        agent_episode_returns: Those episodes' returns per agent id (as a string).
        module_episode_returns: Those episodes' returns per policy (its agents summed).
    """

    fragments: dict[str, Fragment]
    env_steps: int
    agent_steps: int
    episode_returns: list[float]
    episode_lengths: list[int]
    agent_episode_returns: dict[str, list[float]]
    module_episode_returns: dict[str, list[float]]


@dataclass
class _Episode:
    """One copy's episode in progress."""

    obs: dict[AgentID, Any] = field(default_factory=dict)
    """The agents that act next, with what they see."""
    policy_of: dict[AgentID, str] = field(default_factory=dict)
    open: dict[AgentID, Segment] = field(default_factory=dict)
    returns: dict[AgentID, float] = field(default_factory=lambda: defaultdict(float))
    length: int = 0
    trace: list[dict[str, Any]] = field(default_factory=list)
    """With ``output`` set: a row per agent step (:meth:`TraceWriter.write_agent_rows`)."""
    last_row: dict[AgentID, int] = field(default_factory=dict)


@dataclass
class _Tally:
    """What one ``sample`` call gathers across copies."""

    closed: dict[str, list[Segment]] = field(default_factory=lambda: defaultdict(list))
    agent_steps: int = 0
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    per_agent: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    per_module: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def episode_ended(self, episode: _Episode) -> None:
        """Count a finished episode: its return, length, and per agent and policy."""
        self.returns.append(float(sum(episode.returns.values())))
        self.lengths.append(episode.length)
        by_module: dict[str, float] = defaultdict(float)
        for agent, value in episode.returns.items():
            self.per_agent[str(agent)].append(value)
            if agent in episode.policy_of:
                by_module[episode.policy_of[agent]] += value
        for pid, value in by_module.items():
            self.per_module[pid].append(value)


class MultiAgentEnvRunner:
    """Samples :class:`MultiAgentSample` s from ``num_envs_per_env_runner`` env copies.

    Args:
        config: The algorithm config (its env must be a :class:`MultiAgentEnv`, its
            ``multi_agent()`` settings the policies).
        runner_index: 0 for the local runner, 1..n for remote ones (seeding).
        section: The ``multi_agent()`` settings, if not the config's.
    """

    def __init__(
        self, config: Any, runner_index: int = 0, section: MultiAgentSection | None = None
    ) -> None:
        self.config, self.runner_index = config, runner_index
        section = section or config.multi_agent_settings
        if runner_index > 0:  # an actor of its own: size torch's threads to its CPUs
            torch.set_num_threads(max(1, int(config.num_cpus_per_env_runner)))
        create = multi_agent_creator(config.env, config.env_config)
        self.envs: list[MultiAgentEnv] = []
        self.checkers: list[ContractChecker] = []
        for index in range(int(config.num_envs_per_env_runner)):
            env = create()
            self.checkers.append(ContractChecker(env, f"{config.env!r} (copy {index})"))
            self.envs.append(env)
        first = self.envs[0]
        self.policies: dict[str, PolicySpec] = resolve_policies(
            section, list(first.possible_agents), first.observation_spaces, first.action_spaces
        )
        self.mapping = section.mapping()
        self.observation_spaces = {
            pid: _given(spec.observation_space) for pid, spec in self.policies.items()
        }
        with torch.random.fork_rng(devices=[]):  # the learner's weights replace these
            build = config.algo_class.build_module
            self.modules: dict[str, RLModule] = {
                pid: build(policy_config(config, spec), *spec.spaces).eval()
                for pid, spec in self.policies.items()
            }
        from training.env_runner import derive_seed

        self._seeds = [derive_seed(config.seed, runner_index, i) for i in range(len(self.envs))]
        generator_seed = derive_seed(config.seed, runner_index, 10_000)
        self._generator = torch.Generator()
        if generator_seed is not None:
            self._generator.manual_seed(generator_seed)
        self._timestep = 0
        self.weights_version = 0
        self._filter_deltas = self._new_filter_deltas()
        self._traces = (
            TraceWriter(config.output, runner_index, config.output_max_file_size)
            if config.output
            else None
        )
        self._episodes = [self._reset(i, first=True) for i in range(len(self.envs))]

    # ----------------------------------------------------------------- episodes
    def reset(self) -> None:
        """Start fresh (seeded) episodes in every copy; unfinished episodes are dropped."""
        self._episodes = [self._reset(i, first=True) for i in range(len(self.envs))]

    def _reset(self, index: int, first: bool = False) -> _Episode:
        # Seeded once; later episodes continue the env's own RNG (as gymnasium's autoreset).
        seed = self._seeds[index] if first else None
        observations, infos = self.envs[index].reset(seed=seed)
        self.checkers[index].reset(observations, infos)
        return _Episode(obs=dict(observations))

    def _policy(self, episode: _Episode, agent: AgentID) -> str:
        pid = episode.policy_of.get(agent)
        if pid is None:
            pid = self.mapping(agent, episode)
            if pid not in self.modules:
                raise ConfigError(
                    f"policy_mapping_fn({agent!r}, episode) returned {pid!r}, which is not a "
                    f"policy; the policies are {sorted(self.modules)}"
                )
            episode.policy_of[agent] = pid
        return pid

    # ----------------------------------------------------------------- sampling
    def _act(self, explore: bool) -> list[Acting]:
        """Every acting agent's (leaves, action, extras), per copy, one forward per policy."""
        groups: dict[str, list[tuple[int, AgentID, list[np.ndarray]]]] = defaultdict(list)
        for index, episode in enumerate(self._episodes):
            for agent, obs in episode.obs.items():
                pid = self._policy(episode, agent)
                leaves = [np.asarray(x) for x in obs_to_leaves(self.observation_spaces[pid], obs)]
                groups[pid].append((index, agent, leaves))
        chosen: list[Acting] = [{} for _ in self._episodes]
        for pid, members in groups.items():
            module = self.modules[pid]
            batch = [
                torch.from_numpy(np.stack([m[2][i] for m in members]))
                for i in range(len(members[0][2]))
            ]
            with torch.no_grad():
                if explore:
                    out = module.forward_exploration(batch, self._generator, self._timestep)
                else:
                    out = module.forward_inference(batch)
            if module.obs_filter.enabled:  # statistics of what the agents saw, per policy
                with torch.no_grad():
                    self._filter_deltas[pid].push(module.preprocessor(batch).flat.numpy())
            arrays = {key: value.cpu().numpy() for key, value in out.items()}
            actions = arrays.pop(cols.ACTIONS)
            arrays.pop(cols.ACTION_DIST_INPUTS, None)
            for row, (index, agent, leaves) in enumerate(members):
                extras = {key: value[row] for key, value in arrays.items()}
                chosen[index][agent] = (leaves, actions[row], extras)
        return chosen

    def sample(self, num_steps: int | None = None, *, explore: bool = True) -> MultiAgentSample:
        """Step every copy ``num_steps`` env steps (default: the config's fragment length)."""
        steps = num_steps or self.config.get_rollout_fragment_length()
        tally = _Tally()
        for _ in range(steps):
            chosen = self._act(explore)
            for index, acting in enumerate(chosen):
                self._step_copy(index, acting, tally)
            self._timestep += len(self._episodes)
        for episode in self._episodes:  # the fragment ends: cut what is still open
            for agent, segment in list(episode.open.items()):
                pid = episode.policy_of[agent]
                segment.close(False, self._leaves(pid, episode.obs.get(agent)))
                tally.closed[pid].append(segment)
            episode.open.clear()
        fragments = {
            pid: pack(segments, self.weights_version, steps)
            for pid, segments in tally.closed.items()
            if segments
        }
        return MultiAgentSample(
            fragments=fragments,
            env_steps=steps * len(self._episodes),
            agent_steps=tally.agent_steps,
            episode_returns=tally.returns,
            episode_lengths=tally.lengths,
            agent_episode_returns=dict(tally.per_agent),
            module_episode_returns=dict(tally.per_module),
        )

    def _leaves(self, pid: str, obs: Any) -> list[np.ndarray] | None:
        if obs is None:
            return None
        return [np.asarray(x) for x in obs_to_leaves(self.observation_spaces[pid], obs)]

    def _step_copy(self, index: int, acting: Acting, tally: _Tally) -> None:
        """Step copy ``index`` with its agents' actions and record what happened."""
        episode = self._episodes[index]
        actions = {
            agent: self._env_action(episode, agent, a) for agent, (_, a, _) in acting.items()
        }
        returned = self.envs[index].step(actions)
        self.checkers[index].step(actions, returned)  # dicts of the contract's keys from here
        observations, rewards, terminateds, truncateds, _ = cast(Returned, returned)
        tally.agent_steps += len(acting)
        episode.length += 1
        for agent, (leaves, action, extras) in acting.items():
            episode.open.setdefault(agent, Segment()).add(leaves, action, extras)
        if self._traces is not None:
            self._trace_step(episode, acting, rewards, terminateds, truncateds)
        for agent, reward in rewards.items():
            episode.returns[agent] += float(reward)
            if agent in episode.open:
                episode.open[agent].reward(float(reward))
        over = bool(terminateds[ALL] or truncateds[ALL])
        for agent in list(episode.open):
            ended = bool(terminateds.get(agent, False) or truncateds.get(agent, False))
            if not (ended or over):
                continue
            # An agent still in at the episode's end ends as the episode does.
            terminated = bool(terminateds.get(agent, False)) or (
                not ended and bool(terminateds[ALL])
            )
            pid = episode.policy_of[agent]
            segment = episode.open.pop(agent)
            segment.close(terminated, self._leaves(pid, observations.get(agent)))
            tally.closed[pid].append(segment)
        leaving = {a for a, done in (*terminateds.items(), *truncateds.items()) if done}
        episode.obs = {a: o for a, o in observations.items() if a not in leaving}
        if over:
            tally.episode_ended(episode)
            if self._traces is not None:
                total = float(sum(episode.returns.values()))
                self._traces.write_agent_rows(episode.trace, total, episode.length)
            self._episodes[index] = self._reset(index)

    @staticmethod
    def _trace_step(
        episode: _Episode,
        acting: Acting,
        rewards: dict[AgentID, Any],
        terminateds: dict[Any, Any],
        truncateds: dict[Any, Any],
    ) -> None:
        """One env step's agent rows (rewards go to each agent's latest row)."""
        for agent, (leaves, action, _) in acting.items():
            episode.last_row[agent] = len(episode.trace)
            episode.trace.append(
                {
                    cols.AGENT_ID: agent,
                    cols.POLICY_ID: episode.policy_of[agent],
                    cols.ENV_STEP: episode.length - 1,
                    cols.OBS: [leaf.tolist() for leaf in leaves],
                    cols.ACTIONS: np.asarray(action).tolist(),
                    cols.REWARDS: 0.0,
                    cols.TERMINATEDS: False,
                    cols.TRUNCATEDS: False,
                }
            )
        for agent, reward in rewards.items():
            if agent in episode.last_row:
                episode.trace[episode.last_row[agent]][cols.REWARDS] += float(reward)
        over_terminated, over_truncated = bool(terminateds[ALL]), bool(truncateds[ALL])
        for agent, row in episode.last_row.items():
            record = episode.trace[row]
            record[cols.TERMINATEDS] |= bool(terminateds.get(agent)) or over_terminated
            record[cols.TRUNCATEDS] |= bool(truncateds.get(agent)) or over_truncated

    def _env_action(self, episode: _Episode, agent: AgentID, action: np.ndarray) -> Any:
        """The action as the env takes it: a Python int for Discrete, clipped for a Box."""
        space = _given(self.policies[episode.policy_of[agent]].action_space)
        if isinstance(space, gym.spaces.Discrete):
            return int(action)
        if self.config.clip_actions and isinstance(space, gym.spaces.Box):
            action = np.clip(action, space.low, space.high)
        return np.asarray(action, dtype=space.dtype)

    # ----------------------------------------------------------------- weights
    def sample_with_filter_delta(
        self,
        weights: dict[str, Any] | None = None,
        global_timestep: int | None = None,
        weights_version: int | None = None,
    ) -> tuple[MultiAgentSample, dict[str, Any] | None]:
        """New weights if given, then one sample and the filter statistics meanwhile.

        What an asynchronous driver (IMPALA) asks for: one call per sample.
        """
        if weights is not None:
            self.set_weights(weights, global_timestep, weights_version)
        sample = self.sample()
        return sample, (self.get_filter_delta() if self._filter_deltas else None)

    def get_weights(self, policy_ids: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Each policy's module state (``policy_ids``: only these)."""
        chosen = self.modules if policy_ids is None else {p: self.modules[p] for p in policy_ids}
        return {
            pid: {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
            for pid, module in chosen.items()
        }

    def set_weights(
        self,
        weights: dict[str, dict[str, Any]],
        global_timestep: int | None = None,
        weights_version: int | None = None,
    ) -> None:
        """Load the given policies' module states (the others keep theirs)."""
        for pid, state in weights.items():
            tensors = {k: torch.tensor(np.asarray(v)) for k, v in state.items()}
            self.modules[pid].load_state_dict(tensors)
        if global_timestep is not None:
            self._timestep = global_timestep
        if weights_version is not None:
            self.weights_version = weights_version

    def _new_filter_deltas(self) -> dict[str, RunningStat]:
        return {
            pid: RunningStat(module.preprocessor.flat_dim)
            for pid, module in self.modules.items()
            if module.obs_filter.enabled
        }

    def get_filter_delta(self) -> dict[str, Any]:
        """Each filtered policy's observation statistics since the last call (then cleared)."""
        deltas = {pid: stat.to_json() for pid, stat in self._filter_deltas.items()}
        self._filter_deltas = self._new_filter_deltas()
        return deltas

    def apply(self, fn: Any, *args: Any) -> Any:
        """Call ``fn(self, *args)`` here (what ``foreach_worker`` sends to each runner)."""
        return fn(self, *args)

    def ping(self) -> float:
        """Health check used by the runner group."""
        import time

        return time.time()

    def stop(self) -> None:
        """Close the env copies and the trace files."""
        if self._traces is not None:
            self._traces.close()
        for env in self.envs:
            env.close()


def _given(space: Any) -> Any:
    assert space is not None  # resolve_policies fills in every policy's spaces
    return space
