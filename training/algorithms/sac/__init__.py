"""Soft Actor-Critic (twin Q, Polyak targets, automatic entropy tuning) for Box actions."""

from training.algorithms.sac.config import SACConfig
from training.algorithms.sac.sac import SAC

__all__ = ["SAC", "SACConfig"]
