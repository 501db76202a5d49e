"""rlserve.training: an RLlib-style training library on Ray (torch + gymnasium).

The public API follows RLlib's "Getting Started" guide::

    from training import PPOConfig, Algorithm
    algo = PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=1).build()
    result = algo.train()
    path = algo.save().checkpoint.path
    algo = Algorithm.from_checkpoint(path)
"""

from training import registry as _registry
from training.algorithm import Algorithm
from training.algorithms.dqn import DQN, DQNConfig
from training.algorithms.impala import IMPALA, IMPALAConfig
from training.algorithms.ppo import PPO, PPOConfig
from training.algorithms.sac import SAC, SACConfig
from training.checkpoints import CheckpointError, CheckpointVersionError
from training.config import AlgorithmConfig, ConfigError
from training.env_runner_group import EnvRunnerFailedError
from training.envs import UnknownEnvError
from training.multi_agent import MultiAgentEnv, MultiAgentEnvError, PolicySpec, make_multi_agent

_registry.register_algorithms()  # tune.Tuner("PPO", ...) works after `import training`

__all__ = [
    "DQN",
    "IMPALA",
    "PPO",
    "SAC",
    "Algorithm",
    "AlgorithmConfig",
    "CheckpointError",
    "CheckpointVersionError",
    "ConfigError",
    "DQNConfig",
    "EnvRunnerFailedError",
    "IMPALAConfig",
    "MultiAgentEnv",
    "MultiAgentEnvError",
    "PPOConfig",
    "PolicySpec",
    "SACConfig",
    "UnknownEnvError",
    "make_multi_agent",
]
