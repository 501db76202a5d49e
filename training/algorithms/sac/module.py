"""SAC's module: a squashed-Gaussian actor and (twin) soft Q networks over their own encoders.

The actor maps an observation to ``concat(mean, log_std)`` of a Gaussian before the tanh
squash; :class:`~training.distributions.SquashedGaussian` turns that into actions inside the
Box's bounds. Each Q network sees the preprocessed observation with the action, normalised to
``[-1, 1]``, appended to the flat features (after any CNN); without images the critics are
computed together (:class:`StackedCritics`). Only the actor is on the inference path, so
exported graphs hold the actor alone.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from training import columns as cols
from training.config_sections import ModelConfig
from training.config_validation import ConfigError
from training.distributions import SquashedGaussian, squash_into_bounds
from training.preprocessing import PreprocessedObs
from training.rl_module import ACTIVATIONS, Encoder, RLModule, orthogonal_init

__all__ = [
    "LOG_STD_MAX",
    "LOG_STD_MIN",
    "CriticList",
    "QNetwork",
    "SACModule",
    "StackedCritics",
    "check_action_space",
]

LOG_STD_MIN = -20.0
"""Lower clamp of the actor's log-std: a std of 2e-9 is deterministic enough."""
LOG_STD_MAX = 2.0
"""Upper clamp: a std of e^2 = 7.4 before the squash already saturates tanh."""


def check_action_space(action_space: gym.Space[Any]) -> gym.spaces.Box:
    """The action space, if SAC can act in it.

    Raises:
        ConfigError: For a non-Box space, or a Box with an infinite or empty bound.
    """
    if not isinstance(action_space, gym.spaces.Box):
        raise ConfigError(
            f"SAC needs a Box action space, got {type(action_space).__name__}; "
            "use DQN or PPO for discrete actions"
        )
    low, high = np.asarray(action_space.low), np.asarray(action_space.high)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ConfigError(
            "SAC squashes actions into the Box's bounds, which must be finite; got "
            f"low={low.tolist()} high={high.tolist()} (wrap the env with "
            "gymnasium.wrappers.RescaleAction, or use PPO)"
        )
    if not (high > low).all():
        raise ConfigError(f"SAC needs high > low in every action dimension; got {low} / {high}")
    return action_space


class QNetwork(nn.Module):
    """``Q(s, a)``: an encoder over the observation features and the action, a linear head.

    Args:
        flat_dim: Width of the flat observation features.
        image_shapes: ``(C, H, W)`` of each image leaf.
        action_dim: Width of the flat action.
        model: The ``q_model`` settings.
    """

    def __init__(
        self,
        flat_dim: int,
        image_shapes: list[tuple[int, int, int]],
        action_dim: int,
        model: ModelConfig,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(flat_dim + action_dim, image_shapes, model)
        self.head = nn.Linear(self.encoder.out_dim, 1)
        orthogonal_init(self.head, 1.0)

    def forward(self, obs: PreprocessedObs, actions: Tensor) -> Tensor:
        """``(batch,)`` Q-values of normalised flat actions."""
        joined = PreprocessedObs(torch.cat([obs.flat, actions], dim=1), obs.images)
        q: Tensor = self.head(self.encoder(joined))
        return q.squeeze(-1)


class CriticList(nn.Module):
    """Independent :class:`QNetwork` s (each with its own CNN): the path for image observations.

    Args:
        count: How many Q networks.
        flat_dim: Width of the flat observation features.
        image_shapes: ``(C, H, W)`` of each image leaf.
        action_dim: Width of the flat action.
        model: The ``q_model`` settings.
    """

    def __init__(
        self,
        count: int,
        flat_dim: int,
        image_shapes: list[tuple[int, int, int]],
        action_dim: int,
        model: ModelConfig,
    ) -> None:
        super().__init__()
        self.networks = nn.ModuleList(
            QNetwork(flat_dim, image_shapes, action_dim, model) for _ in range(count)
        )

    def forward(self, obs: PreprocessedObs, actions: Tensor) -> Tensor:
        """``(batch, count)`` Q-values, one column per network."""
        return torch.stack([q(obs, actions) for q in self.networks], dim=1)


class StackedCritics(nn.Module):
    """``count`` MLP Q networks computed together, their weights stacked: ``(count, in, out)``.

    Numerically ``count`` independent networks (separately initialised, no shared weight),
    but each layer is one batched matmul for all of them, so twin Q costs about the kernel
    launches and autograd nodes of one network: on small nets, where per-op overhead
    dominates, the update is ~30 % faster than two separate networks. Flat observations only.

    Args:
        count: How many Q networks.
        in_dim: Width of the flat observation features plus the action.
        model: The ``q_model`` settings (``fcnet_hiddens``, ``fcnet_activation``).
    """

    def __init__(self, count: int, in_dim: int, model: ModelConfig) -> None:
        super().__init__()
        self.count = count
        self.activation = ACTIVATIONS[model.fcnet_activation]()
        sizes = [in_dim, *model.fcnet_hiddens, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            weight = torch.empty(count, fan_in, fan_out)
            gain = 1.0 if index == len(sizes) - 2 else math.sqrt(2)
            for k in range(count):  # as nn.Linear's (out, in) weight, transposed
                weight[k] = nn.init.orthogonal_(torch.empty(fan_out, fan_in), gain=gain).T
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.zeros(count, 1, fan_out)))

    def forward(self, obs: PreprocessedObs, actions: Tensor) -> Tensor:
        """``(batch, count)`` Q-values, one column per network."""
        x = torch.cat([obs.flat, actions], dim=1)
        h = x.unsqueeze(0).expand(self.count, *x.shape)
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(bias, h, weight)
            if index < last:
                h = self.activation(h)
        return h.squeeze(-1).T


class SACModule(RLModule):
    """Actor and critics of SAC.

    Args:
        observation_space: The env's observation space.
        action_space: A Box with finite bounds.
        model: The actor's architecture.
        q_model: Each Q network's architecture.
        observation_filter: Whether the mean/std filter is on.
        twin_q: Two Q networks instead of one.
    """

    def __init__(
        self,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        model: ModelConfig,
        q_model: ModelConfig,
        *,
        observation_filter: bool,
        twin_q: bool,
    ) -> None:
        box = check_action_space(action_space)
        super().__init__(
            observation_space, action_space, model, observation_filter=observation_filter
        )
        self.action_shape = tuple(box.shape)
        self.action_dim = math.prod(box.shape)
        flat_dim, images = self.preprocessor.flat_dim, self.preprocessor.image_shapes
        self.pi_encoder = Encoder(flat_dim, images, model)
        self.pi_head = nn.Linear(self.pi_encoder.out_dim, 2 * self.action_dim)
        # Small initial means and log-stds: actions start spread over the whole range.
        orthogonal_init(self.pi_head, 0.01)
        count = 2 if twin_q else 1
        self.q_networks: nn.Module
        if images:
            self.q_networks = CriticList(count, flat_dim, images, self.action_dim, q_model)
        else:
            self.q_networks = StackedCritics(count, flat_dim + self.action_dim, q_model)

    # ----------------------------------------------------------------- actor
    def dist_inputs(self, obs: PreprocessedObs) -> Tensor:
        """``concat(mean, clamped log_std)`` before the squash, ``(batch, 2 * action_dim)``."""
        mean, log_std = self.pi_head(self.pi_encoder(obs)).chunk(2, dim=-1)
        return torch.cat([mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)], dim=-1)

    def distribution(self, dist_inputs: Tensor) -> SquashedGaussian:
        """The squashed Gaussian of a batch of ``action_dist_inputs``."""
        return SquashedGaussian(dist_inputs, self.action_low, self.action_high, self.action_shape)

    def get_action_distribution(self, dist_inputs: Tensor) -> SquashedGaussian:
        """What :meth:`training.policy.Policy.action_distribution` returns."""
        return self.distribution(dist_inputs)

    # ----------------------------------------------------------------- critics
    def q_values(self, obs: PreprocessedObs, normalized_actions: Tensor) -> Tensor:
        """``(batch, num_q)`` Q-values, one column per Q network."""
        q: Tensor = self.q_networks(obs, normalized_actions)
        return q

    def compute_q_values(self, leaves: list[Tensor], actions: Tensor | None = None) -> Tensor:
        """``(batch, num_q)`` Q-values of actions (space layout); the deterministic ones if None."""
        obs = self.encode_inputs(leaves)
        dist = self.distribution(self.dist_inputs(obs))
        if actions is None:
            actions = dist.deterministic()
        return self.q_values(obs, dist.normalize(actions))

    # ----------------------------------------------------------------- forward passes
    def forward_inference(self, leaves: list[Tensor]) -> dict[str, Tensor]:
        """The squashed mean (in bounds) and the distribution inputs."""
        dist_inputs = self.dist_inputs(self.encode_inputs(leaves))
        # The distribution's mode, computed directly: the exported graph keeps only these ops.
        mean = dist_inputs[:, : self.action_dim]
        actions = squash_into_bounds(mean, self.action_low, self.action_high)
        actions = actions.reshape(actions.shape[0], *self.action_shape)
        return {cols.ACTION_DIST_INPUTS: dist_inputs, cols.ACTIONS: actions}

    def forward_exploration(
        self, leaves: list[Tensor], generator: torch.Generator | None, timestep: int
    ) -> dict[str, Tensor]:
        """Sampled actions (in bounds) with their log-probabilities."""
        dist = self.distribution(self.dist_inputs(self.encode_inputs(leaves)))
        actions, logp = dist.rsample(generator)
        return {cols.ACTIONS: actions, cols.ACTION_LOGP: logp}

    def forward_train(self, leaves: list[Tensor]) -> dict[str, Tensor]:
        """The distribution inputs with gradients (the learner calls the parts directly)."""
        return {cols.ACTION_DIST_INPUTS: self.dist_inputs(self.encode_inputs(leaves))}
