"""IMPALA: asynchronous actor-learner training with V-trace (Espeholt et al., 2018)."""

from training.algorithms.impala.config import IMPALAConfig
from training.algorithms.impala.impala import IMPALA

__all__ = ["IMPALA", "IMPALAConfig"]
