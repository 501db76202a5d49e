"""Deep Q-Network (double-Q, dueling, n-step)."""

from training.algorithms.dqn.config import DQNConfig
from training.algorithms.dqn.dqn import DQN

__all__ = ["DQN", "DQNConfig"]
