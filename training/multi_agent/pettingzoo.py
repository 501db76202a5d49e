"""A PettingZoo ``ParallelEnv`` as a :class:`~training.multi_agent.MultiAgentEnv`.

PettingZoo is an optional extra (``pip install rlserve[pettingzoo]``); this module imports it
only through the env it is given. A parallel env already speaks dicts keyed by agent; the
adapter adds what RLlib's contract asks: the spaces as dicts, ``agents`` kept current, and
``"__all__"`` in ``terminateds`` / ``truncateds`` once no agent is left (truncated if any
agent was truncated at the end, else terminated).

Example::

    from mpe2 import simple_spread_v3

    class SimpleSpread(ParallelPettingZooEnv):
        def __init__(self, config=None):
            super().__init__(simple_spread_v3.parallel_env(**(config or {})))

    config = PPOConfig().environment(SimpleSpread).multi_agent(policies={"shared"})
"""

from __future__ import annotations

from typing import Any

from training.multi_agent.env import ALL, AgentID, MultiAgentEnv

__all__ = ["ParallelPettingZooEnv"]


class ParallelPettingZooEnv(MultiAgentEnv):
    """Wraps a PettingZoo parallel env (``pettingzoo.ParallelEnv``).

    Args:
        env: The parallel env.
    """

    def __init__(self, env: Any) -> None:
        self.par_env = env
        self.possible_agents = list(env.possible_agents)
        self.agents = []
        self.observation_spaces = {a: env.observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: env.action_space(a) for a in self.possible_agents}
        self.metadata = dict(getattr(env, "metadata", {}))

    def reset(  # type: ignore[override]  # infos are keyed by agent, as observations
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[AgentID, Any], dict[AgentID, Any]]:
        """Reset the parallel env: the first observations and infos of every agent."""
        observations, infos = self.par_env.reset(seed=seed, options=options)
        self.agents = list(self.par_env.agents)
        return dict(observations), dict(infos)

    def step(self, action_dict: dict[AgentID, Any]) -> tuple[Any, Any, Any, Any, Any]:
        """Step the parallel env; ``"__all__"`` once no agent is left."""
        observations, rewards, terminations, truncations, infos = self.par_env.step(action_dict)
        self.agents = list(self.par_env.agents)
        terminateds, truncateds = dict(terminations), dict(truncations)
        over = not self.agents
        truncateds[ALL] = over and any(truncateds.values())
        terminateds[ALL] = over and not truncateds[ALL]
        return dict(observations), dict(rewards), terminateds, truncateds, dict(infos)

    def close(self) -> None:
        """Close the parallel env."""
        self.par_env.close()
