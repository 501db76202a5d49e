"""Action distributions built from a module's ``action_dist_inputs``.

* Discrete actions: categorical over logits (``action_dist_inputs`` = logits).
* Box actions: diagonal Gaussian; ``action_dist_inputs`` = ``concat(mean, log_std)`` as RLlib
  lays it out. Samples are unclipped (their log-probability is exact); the env receives them
  clipped into the action space.
* Box actions, SAC: :class:`SquashedGaussian`, ``low + (tanh(u) + 1) / 2 * (high - low)`` with
  ``u ~ N(mean, std)`` (Haarnoja et al., 2018, appendix C): always inside the bounds, with the
  change-of-variables correction in its log-probability. Same ``action_dist_inputs`` layout.

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

__all__ = ["ActionDistribution", "SquashedGaussian", "dist_inputs_size", "squash_into_bounds"]

LOG_2 = math.log(2.0)


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


def squash_into_bounds(u: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """``low + (tanh(u) + 1) / 2 * (high - low)``, clamped into ``[low, high]``.

    The clamp matters: a saturated ``tanh`` can land one float32 step past a bound after the
    rescale (e.g. ``0.9 + 6e-8`` for a bound of 0.9), which ``Box.contains`` refuses.
    """
    return torch.clamp(low + (torch.tanh(u) + 1.0) * ((high - low) / 2.0), low, high)


class SquashedGaussian:
    """A batch of tanh-squashed diagonal Gaussians rescaled into a Box's bounds.

    ``action_dist_inputs`` are ``concat(mean, log_std)`` of the Gaussian *before* the squash.
    Sampling is reparameterised (``rsample``), so the actor's loss differentiates through it.

    Args:
        inputs: ``(batch, 2 * action_dim)`` tensor.
        low: ``(action_dim,)`` lower bounds (finite).
        high: ``(action_dim,)`` upper bounds (finite).
        action_shape: The Box's shape; actions are returned in it.
    """

    def __init__(
        self, inputs: Tensor, low: Tensor, high: Tensor, action_shape: tuple[int, ...]
    ) -> None:
        self.inputs = inputs
        self.mean, log_std = torch.chunk(inputs, 2, dim=-1)
        self.std = log_std.exp()
        self.low, self.high = low, high
        self.half_range = (high - low) / 2.0
        self.action_shape = action_shape
        # log |d action / d tanh(u)|, the same for every row: the rescale into the bounds.
        self._log_scale = torch.log(self.half_range).sum()

    def _to_space(self, u: Tensor) -> Tensor:
        actions = squash_into_bounds(u, self.low, self.high)
        return actions.reshape(actions.shape[0], *self.action_shape)

    def normalize(self, actions: Tensor) -> Tensor:
        """Actions in the space's layout -> flat ``(batch, action_dim)`` in ``[-1, 1]``."""
        flat = actions.reshape(actions.shape[0], -1).to(self.mean.dtype)
        return (flat - self.low) / self.half_range - 1.0

    def _log_prob_u(self, u: Tensor, noise: Tensor) -> Tensor:
        # log N(u; mean, std) from the standard-normal draw, then the tanh correction
        # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), stable for large |u|.
        gaussian = -0.5 * noise.pow(2) - self.std.log() - 0.5 * math.log(2.0 * math.pi)
        correction = 2.0 * (LOG_2 - u - torch.nn.functional.softplus(-2.0 * u))
        return (gaussian - correction).sum(dim=-1) - self._log_scale

    def rsample(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Reparameterised actions (in the space's layout, in bounds) and their log-probs."""
        noise = torch.randn(
            self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device
        )
        u = self.mean + self.std * noise
        return self._to_space(u), self._log_prob_u(u, noise)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Actions in the space's layout, inside the bounds."""
        with torch.no_grad():
            return self.rsample(generator)[0]

    def rsample_normalized(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Like :meth:`rsample` but the actions flat and in ``[-1, 1]`` (what critics take)."""
        noise = torch.randn(
            self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device
        )
        u = self.mean + self.std * noise
        return torch.tanh(u), self._log_prob_u(u, noise)

    def deterministic(self) -> Tensor:
        """The squashed mean, rescaled into the bounds (SAC's evaluation action)."""
        return self._to_space(self.mean)

    def log_prob(self, actions: Tensor) -> Tensor:
        """Log-density of actions in the space's layout (kept off the bounds for ``atanh``)."""
        squashed = self.normalize(actions)
        eps = torch.finfo(squashed.dtype).eps
        u = torch.atanh(squashed.clamp(-1.0 + eps, 1.0 - eps))
        return self._log_prob_u(u, (u - self.mean) / self.std)
