"""``MultiAgentEnv``: RLlib's multi-agent env contract, and ``make_multi_agent``.

An episode has agents (ids: strings or integers). ``reset`` and ``step`` speak in dicts keyed by
agent id: an agent acts when, and only when, the last step (or the reset) gave it an
observation; ``step`` returns ``(observations, rewards, terminateds, truncateds, infos)``, where
``terminateds`` and ``truncateds`` also hold ``"__all__"``, which ends the episode. Agents may
join mid-episode (an observation for a new id) and leave (terminated or truncated), and never
come back within the episode.

:class:`ContractChecker` checks an env against the contract as a runner steps it, so a broken
env fails at the step that broke it, naming the agent and the key (RLlib's "agent already done
but still received data" names neither).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym

from formats.errors import RlserveError

__all__ = [
    "ALL",
    "MULTI_AGENT_PREFIX",
    "AgentID",
    "ContractChecker",
    "MultiAgentEnv",
    "MultiAgentEnvError",
    "make_multi_agent",
    "multi_agent_creator",
]

AgentID = str | int
"""An agent's id within an episode."""
ALL = "__all__"
"""The key of ``terminateds`` / ``truncateds`` that ends the whole episode."""
MULTI_AGENT_PREFIX = "make_multi_agent:"
"""``env="make_multi_agent:CartPole-v1"`` is ``make_multi_agent("CartPole-v1")``: the name a
config (and a checkpoint) records such a class by."""


class MultiAgentEnvError(RlserveError, ValueError):
    """A multi-agent env broke its contract (the message names the agent and the key)."""


class MultiAgentEnv(gym.Env[dict[AgentID, Any], dict[AgentID, Any]]):
    """A multi-agent env: subclass it, set the attributes, implement ``reset`` and ``step``.

    Attributes:
        possible_agents: Every agent id that may appear in an episode.
        agents: The agents of the current episode (alive now).
        observation_spaces: Each agent's observation space.
        action_spaces: Each agent's action space.
    """

    possible_agents: list[AgentID]
    agents: list[AgentID]
    observation_spaces: dict[AgentID, gym.Space[Any]]
    action_spaces: dict[AgentID, gym.Space[Any]]

    def get_observation_space(self, agent_id: AgentID) -> gym.Space[Any]:
        """``agent_id``'s observation space."""
        return self.observation_spaces[agent_id]

    def get_action_space(self, agent_id: AgentID) -> gym.Space[Any]:
        """``agent_id``'s action space."""
        return self.action_spaces[agent_id]


def _check_spaces(env: MultiAgentEnv, name: str) -> None:
    for attribute in ("possible_agents", "observation_spaces", "action_spaces"):
        if not hasattr(env, attribute):
            raise MultiAgentEnvError(f"env {name}: a MultiAgentEnv must set {attribute!r}")
    for agent in env.possible_agents:
        for attribute in ("observation_spaces", "action_spaces"):
            spaces = getattr(env, attribute)
            if agent not in spaces or not isinstance(spaces[agent], gym.Space):
                raise MultiAgentEnvError(
                    f"env {name}: {attribute}[{agent!r}]: expected a gymnasium space for every "
                    "agent of possible_agents"
                )


class ContractChecker:
    """Checks what a multi-agent env returns against the contract, episode by episode.

    Args:
        env: The env.
        name: How errors name it.
        check_spaces: Also check every observation against its agent's space (a ``contains``
            per agent and step).
    """

    def __init__(self, env: MultiAgentEnv, name: str, check_spaces: bool = True) -> None:
        if not isinstance(env, MultiAgentEnv):
            raise MultiAgentEnvError(
                f"env {name}: {type(env).__name__} is not a training.MultiAgentEnv (multi-agent "
                "training steps dicts keyed by agent id)"
            )
        _check_spaces(env, name)
        self.env, self.name, self.check_spaces = env, name, check_spaces
        self.done: set[AgentID] = set()
        """Agents that left the current episode."""
        self.step_index = 0

    def reset(self, observations: Any, infos: Any) -> None:
        """Check a reset's return."""
        self.done.clear()
        self.step_index = 0
        self._observations(self._dict(observations, "observations", "reset"), "reset")
        self._dict(infos, "infos", "reset")

    def step(self, actions: Mapping[AgentID, Any], returned: Any) -> None:
        """Check a step's return (``returned``) for the ``actions`` it was given."""
        self.step_index += 1
        where = f"step {self.step_index}"
        if not isinstance(returned, tuple) or len(returned) != 5:
            raise MultiAgentEnvError(
                f"env {self.name}: {where}: step() must return (observations, rewards, "
                "terminateds, truncateds, infos)"
            )
        observations, rewards, terminateds, truncateds, _ = returned
        names = ("observations", "rewards", "terminateds", "truncateds", "infos")
        for value, key in zip(returned, names, strict=True):
            self._dict(value, key, where)
        for key, flags in (("terminateds", terminateds), ("truncateds", truncateds)):
            if ALL not in flags:
                raise MultiAgentEnvError(
                    f"env {self.name}: {where}: {key} has no {ALL!r} key (True ends the episode)"
                )
        for agent, reward in rewards.items():
            if agent in self.done:
                raise MultiAgentEnvError(
                    f"env {self.name}: {where}: rewards[{agent!r}]: agent {agent!r} already "
                    "left the episode (terminated or truncated)"
                )
            if not isinstance(reward, int | float) or isinstance(reward, bool):
                try:
                    float(reward)
                except (TypeError, ValueError):
                    raise MultiAgentEnvError(
                        f"env {self.name}: {where}: rewards[{agent!r}]: expected a number, got "
                        f"{type(reward).__name__}"
                    ) from None
        self._observations(observations, where)
        for agent in actions:
            left = bool(terminateds.get(agent)) or bool(truncateds.get(agent))
            if left:
                self.done.add(agent)
        if terminateds[ALL] or truncateds[ALL]:
            self.done.update(observations)

    def _dict(self, value: Any, key: str, where: str) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise MultiAgentEnvError(
                f"env {self.name}: {where}: {key}: expected a dict keyed by agent id, got "
                f"{type(value).__name__}"
            )
        return value

    def _observations(self, observations: dict[Any, Any], where: str) -> None:
        env = self.env
        for agent, obs in observations.items():
            if agent in self.done:
                raise MultiAgentEnvError(
                    f"env {self.name}: {where}: observations[{agent!r}]: agent {agent!r} "
                    "already left the episode (terminated or truncated) and cannot come back"
                )
            if agent not in env.observation_spaces:
                raise MultiAgentEnvError(
                    f"env {self.name}: {where}: observations[{agent!r}]: unknown agent; "
                    f"possible_agents are {list(env.possible_agents)}"
                )
            if self.check_spaces and not env.observation_spaces[agent].contains(obs):
                raise MultiAgentEnvError(
                    f"env {self.name}: {where}: observations[{agent!r}]: outside its space "
                    f"{env.observation_spaces[agent]}"
                )


def make_multi_agent(env: str | Callable[[dict[str, Any]], gym.Env[Any, Any]]) -> Any:
    """A multi-agent env class of ``num_agents`` independent copies of a single-agent env.

    ``make_multi_agent("CartPole-v1")({"num_agents": 2})`` has agents ``0`` and ``1``, each in
    its own CartPole; an agent leaves when its copy's episode ends, and the episode ends
    (``"__all__"``) when every agent has left: terminated if all terminated, else truncated.
    The rest of the config goes to every copy.

    Args:
        env: A registered gymnasium id, a ``"module:Class"`` entry point, or a callable taking
            the env config.

    Returns:
        A :class:`MultiAgentEnv` subclass taking the env config.
    """
    from training.envs import make_env_creator

    class MultiEnv(MultiAgentEnv):
        def __init__(self, config: dict[str, Any] | None = None) -> None:
            settings = dict(config or {})
            num_agents = int(settings.pop("num_agents", 1))
            if num_agents < 1:
                raise MultiAgentEnvError(f"num_agents: expected at least 1, got {num_agents}")
            create = make_env_creator(env, settings)
            self.envs = [create() for _ in range(num_agents)]
            self.possible_agents = list(range(num_agents))
            self.agents = []
            self.observation_spaces = {i: e.observation_space for i, e in enumerate(self.envs)}
            self.action_spaces = {i: e.action_space for i, e in enumerate(self.envs)}
            self._ended: dict[AgentID, bool] = {}  # agent -> terminated (else truncated)

        def reset(  # type: ignore[override]  # infos are keyed by agent, as observations
            self, *, seed: int | None = None, options: dict[str, Any] | None = None
        ) -> tuple[dict[AgentID, Any], dict[AgentID, Any]]:
            observations: dict[AgentID, Any] = {}
            infos: dict[AgentID, Any] = {}
            for i, copy in enumerate(self.envs):
                # Distinct, reproducible seeds per copy (the same seed would mirror them).
                copy_seed = None if seed is None else seed * len(self.envs) + i
                observations[i], infos[i] = copy.reset(seed=copy_seed, options=options)
            self.agents = list(self.possible_agents)
            self._ended = {}
            return observations, infos

        def step(self, action_dict: dict[AgentID, Any]) -> tuple[Any, Any, Any, Any, Any]:
            observations, rewards, terminateds, truncateds, infos = {}, {}, {}, {}, {}
            for agent, action in action_dict.items():
                obs, reward, terminated, truncated, info = self.envs[int(agent)].step(action)
                observations[agent], rewards[agent], infos[agent] = obs, reward, info
                terminateds[agent], truncateds[agent] = terminated, truncated
                if terminated or truncated:
                    self._ended[agent] = bool(terminated)
            self.agents = [a for a in self.possible_agents if a not in self._ended]
            over = not self.agents
            terminateds[ALL] = over and all(self._ended.values())
            truncateds[ALL] = over and not terminateds[ALL]
            return observations, rewards, terminateds, truncateds, infos

        def close(self) -> None:
            for copy in self.envs:
                copy.close()

    from training.config import env_to_json

    name = env_to_json(env)
    MultiEnv.__name__ = MultiEnv.__qualname__ = f"MultiAgent({name})"
    MultiEnv.env_spec_json = MULTI_AGENT_PREFIX + str(name)  # type: ignore[attr-defined]
    return MultiEnv


def multi_agent_creator(env: Any, env_config: dict[str, Any] | None = None) -> Callable[[], Any]:
    """:func:`training.envs.make_env_creator` that also takes ``"make_multi_agent:<env>"``.

    Raises:
        training.UnknownEnvError: For an unknown env, inner ones included (named).
    """
    from training.envs import make_env_creator

    if isinstance(env, str) and env.startswith(MULTI_AGENT_PREFIX):
        inner = env[len(MULTI_AGENT_PREFIX) :]
        make_env_creator(inner)  # an unknown id fails here, by its own name
        return make_env_creator(make_multi_agent(inner), env_config)
    return make_env_creator(env, env_config)
