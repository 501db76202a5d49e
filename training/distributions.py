"""Action distributions built from a module's ``action_dist_inputs``.

* Discrete actions: categorical over logits (``action_dist_inputs`` = logits).
* Box actions: diagonal Gaussian; ``action_dist_inputs`` = ``concat(mean, log_std)`` as RLlib
  lays it out. Samples are unclipped (their log-probability is exact); the env receives them
  clipped into the action space.

Sampling takes an optional ``torch.Generator`` so each EnvRunner has its own reproducible
stream independent of the learner's.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, Independent, Normal

__all__ = ["ActionDistribution", "dist_inputs_size"]


def dist_inputs_size(action_space: gym.Space[Any]) -> int:
    """Width of ``action_dist_inputs`` for an action space.

    Raises:
        ValueError: For action spaces other than Discrete and Box.
    """
    if isinstance(action_space, gym.spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, gym.spaces.Box):
        return 2 * math.prod(action_space.shape)
    raise ValueError(
        f"unsupported action space {type(action_space).__name__}: expected Discrete or Box"
    )


class ActionDistribution:
    """A batch of action distributions with reproducible sampling.

    Args:
        action_space: Discrete or Box.
        inputs: ``(batch, dist_inputs_size(action_space))`` tensor.
    """

    def __init__(self, action_space: gym.Space[Any], inputs: Tensor) -> None:
        self.action_space = action_space
        self.inputs = inputs
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.dist: Distribution
        if self.discrete:
            # Argument validation costs more than the sampling itself on small batches.
            self.dist = Categorical(logits=inputs, validate_args=False)
        else:
            mean, log_std = torch.chunk(inputs, 2, dim=-1)
            self.mean, self.std = mean, log_std.exp()
            normal = Normal(mean, self.std, validate_args=False)
            self.dist = Independent(normal, 1, validate_args=False)

    def _to_space(self, flat: Tensor) -> Tensor:
        if self.discrete:
            start = int(self.action_space.start)  # type: ignore[attr-defined]
            return torch.add(flat, start)
        return flat.reshape(flat.shape[0], *self.action_space.shape)  # type: ignore[misc]

    def _from_space(self, actions: Tensor) -> Tensor:
        if self.discrete:
            start = int(self.action_space.start)  # type: ignore[attr-defined]
            return torch.sub(actions.long(), start)
        return actions.reshape(actions.shape[0], -1).to(self.inputs.dtype)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw one action per row, in the action space's layout (Discrete ``start`` applied)."""
        if self.discrete:
            probs = torch.softmax(self.inputs, dim=-1)
            flat = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            noise = torch.randn(
                self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device
            )
            flat = self.mean + self.std * noise
        return self._to_space(flat)

    def deterministic(self) -> Tensor:
        """The mode: argmax of the logits, or the Gaussian mean (unclipped)."""
        flat = self.inputs.argmax(dim=-1) if self.discrete else self.mean
        return self._to_space(flat)

    def log_prob(self, actions: Tensor) -> Tensor:
        """Log-probability of actions given in the action space's layout."""
        return self.dist.log_prob(self._from_space(actions))

    def entropy(self) -> Tensor:
        """Entropy per row."""
        return self.dist.entropy()

    def kl(self, other: ActionDistribution) -> Tensor:
        """``KL(self || other)`` per row."""
        return torch.distributions.kl_divergence(self.dist, other.dist)
