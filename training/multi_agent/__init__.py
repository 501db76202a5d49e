"""Multi-agent training: the env contract, the policies, and the agent-to-policy mapping.

Import what you need from :mod:`training` (``MultiAgentEnv``, ``make_multi_agent``,
``PolicySpec``) or from these modules:

- :mod:`training.multi_agent.env`: :class:`MultiAgentEnv` (RLlib's contract),
  :func:`make_multi_agent` and the checker that holds an env to the contract as it steps;
- :mod:`training.multi_agent.spec`: :class:`PolicySpec` and the ``multi_agent()`` section;
- :mod:`training.multi_agent.pettingzoo`: a PettingZoo ``ParallelEnv`` as a
  :class:`MultiAgentEnv` (``pip install rlserve[pettingzoo]``).
"""

from training.multi_agent.env import MultiAgentEnv, MultiAgentEnvError, make_multi_agent
from training.multi_agent.spec import PolicySpec

__all__ = ["MultiAgentEnv", "MultiAgentEnvError", "PolicySpec", "make_multi_agent"]
