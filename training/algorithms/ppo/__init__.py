"""Proximal Policy Optimization."""

from training.algorithms.ppo.config import PPOConfig
from training.algorithms.ppo.ppo import PPO

__all__ = ["PPO", "PPOConfig"]
