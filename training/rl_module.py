"""``RLModule``: the policy network with its preprocessing, filter and three forward passes.

As in RLlib's new stack, a module has

* ``forward_inference(leaves)`` — deterministic actions (Box actions clipped into bounds) and
  the action-distribution inputs; this is the only path an exporter puts into a graph;
* ``forward_exploration(leaves, generator, timestep)`` — sampled actions for EnvRunners;
* ``forward_train(leaves)`` — everything the learner's loss needs.

``leaves`` is the raw observation batch split by :func:`formats.leaves.flatten_leaves`.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from training import columns as cols
from training.config_sections import ModelConfig
from training.distributions import ActionDistribution
from training.preprocessing import ObservationFilter, ObservationPreprocessor, PreprocessedObs

__all__ = ["ACTIVATIONS", "Encoder", "RLModule", "orthogonal_init"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


def orthogonal_init(layer: nn.Module, gain: float) -> None:
    """Orthogonal weights and zero bias (the usual PPO/DQN initialisation)."""
    if isinstance(layer, nn.Linear | nn.Conv2d):
        nn.init.orthogonal_(layer.weight, gain=gain)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def _default_conv_filters(height: int, width: int) -> list[list[int]]:
    if min(height, width) >= 64:
        return [[32, 8, 4], [64, 4, 2], [64, 3, 1]]
    if min(height, width) >= 16:
        return [[16, 4, 2], [32, 3, 2]]
    return [[16, 3, 1], [32, 3, 1]]


class Encoder(nn.Module):
    """CNN per image, concatenated with the flat features, then an MLP.

    Args:
        flat_dim: Width of the flat (non-image) features.
        image_shapes: ``(C, H, W)`` of each image leaf.
        model: Architecture settings.
    """

    def __init__(
        self, flat_dim: int, image_shapes: list[tuple[int, int, int]], model: ModelConfig
    ) -> None:
        super().__init__()
        activation = ACTIVATIONS[model.fcnet_activation]
        self.cnns = nn.ModuleList()
        in_dim = flat_dim
        for channels, height, width in image_shapes:
            layers: list[nn.Module] = []
            c_in = channels
            for out, kernel, stride in model.conv_filters or _default_conv_filters(height, width):
                layers += [nn.Conv2d(c_in, out, kernel, stride), nn.ReLU()]
                c_in = out
            layers.append(nn.Flatten())
            cnn = nn.Sequential(*layers)
            with torch.no_grad():
                in_dim += int(cnn(torch.zeros(1, channels, height, width)).shape[1])
            self.cnns.append(cnn)
        mlp: list[nn.Module] = []
        for size in model.fcnet_hiddens:
            mlp += [nn.Linear(in_dim, size), activation()]
            in_dim = size
        self.mlp = nn.Sequential(*mlp)
        self.out_dim = in_dim
        for layer in self.modules():
            orthogonal_init(layer, math.sqrt(2))

    def forward(self, obs: PreprocessedObs) -> Tensor:
        """Encode a preprocessed batch into ``(batch, out_dim)`` features."""
        parts = [obs.flat] + [cnn(image) for cnn, image in zip(self.cnns, obs.images, strict=True)]
        features = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        out: Tensor = self.mlp(features)
        return out


class RLModule(nn.Module, abc.ABC):
    """Base of every algorithm's module: preprocessing, filter, action bounds.

    Args:
        observation_space: The env's observation space.
        action_space: The env's action space (Discrete or Box).
        model: Architecture settings.
        observation_filter: Whether the mean/std filter is on.
    """

    def __init__(
        self,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        model: ModelConfig,
        *,
        observation_filter: bool,
    ) -> None:
        super().__init__()
        self.observation_space = observation_space
        self.action_space = action_space
        self.model_config = model
        self.preprocessor = ObservationPreprocessor(observation_space)
        self.obs_filter = ObservationFilter(self.preprocessor.flat_dim, enabled=observation_filter)
        self.is_box_action = isinstance(action_space, gym.spaces.Box)
        if isinstance(action_space, gym.spaces.Box):
            low = np.asarray(action_space.low, dtype=np.float32).reshape(-1)
            high = np.asarray(action_space.high, dtype=np.float32).reshape(-1)
            self.action_low: Tensor
            self.action_high: Tensor
            self.register_buffer("action_low", torch.from_numpy(low))
            self.register_buffer("action_high", torch.from_numpy(high))

    is_recurrent = False
    """Whether the module carries a state from step to step (``model.use_lstm``)."""

    def initial_state(self, batch: int) -> dict[str, Tensor]:
        """The state of ``batch`` episodes at their start (empty for a feed-forward module)."""
        return {}

    def initial_previous(self, batch: int) -> dict[str, Tensor]:
        """The previous action and reward a module reads, at ``batch`` episodes' first step.

        Zeros under :data:`~training.columns.PREV_ACTIONS` (an action per row: ``int64`` for
        Discrete, the Box's shape in float32) and :data:`~training.columns.PREV_REWARDS`
        (float32), each only when ``lstm_use_prev_action`` / ``lstm_use_prev_reward`` is on;
        fed with the state (in the same dict) to every step.
        """
        device = next(self.parameters()).device
        previous: dict[str, Tensor] = {}
        if self.model_config.lstm_use_prev_action:
            if isinstance(self.action_space, gym.spaces.Discrete):
                previous[cols.PREV_ACTIONS] = torch.zeros(batch, dtype=torch.int64, device=device)
            else:
                shape = (batch, *(self.action_space.shape or ()))
                previous[cols.PREV_ACTIONS] = torch.zeros(shape, device=device)
        if self.model_config.lstm_use_prev_reward:
            previous[cols.PREV_REWARDS] = torch.zeros(batch, device=device)
        return previous

    def next_previous(
        self, actions: np.ndarray, rewards: np.ndarray, valid: np.ndarray
    ) -> dict[str, np.ndarray]:
        """What the next step reads as its previous action and reward (:meth:`initial_previous`).

        Args:
            actions: The actions just taken, one per row (Box actions are clipped into the
                space, as the env and the served policy take them).
            rewards: The rewards they brought.
            valid: Rows that were steps of an episode; the others were reset rows, after which
                an episode starts (zeros).
        """
        previous: dict[str, np.ndarray] = {}
        if self.model_config.lstm_use_prev_action:
            if self.is_box_action:
                low = self.action_low.cpu().numpy().reshape(self.action_space.shape or ())
                high = self.action_high.cpu().numpy().reshape(self.action_space.shape or ())
                taken = np.clip(actions, low, high).astype(np.float32)
            else:
                taken = np.array(actions, dtype=np.int64)
            taken[~valid] = 0
            previous[cols.PREV_ACTIONS] = taken
        if self.model_config.lstm_use_prev_reward:
            previous[cols.PREV_REWARDS] = np.where(valid, rewards, 0.0).astype(np.float32)
        return previous

    def encode_inputs(self, leaves: list[Tensor]) -> PreprocessedObs:
        """Preprocess and filter raw observation leaves."""
        pre = self.preprocessor(leaves)
        return PreprocessedObs(self.obs_filter(pre.flat), pre.images)

    def clip_actions(self, actions: Tensor) -> Tensor:
        """Clip Box actions into the action space's bounds (identity for Discrete)."""
        if not self.is_box_action:
            return actions
        flat = actions.reshape(actions.shape[0], -1)
        clipped = torch.clamp(flat, self.action_low, self.action_high)
        return clipped.reshape(actions.shape)

    def get_action_distribution(self, dist_inputs: Tensor) -> Any:
        """The action distribution of a batch of ``action_dist_inputs``.

        Categorical or diagonal Gaussian here; SAC's module returns a squashed Gaussian.
        """
        return ActionDistribution(self.action_space, dist_inputs)

    @abc.abstractmethod
    def forward_inference(self, leaves: list[Tensor]) -> dict[str, Tensor]:
        """Deterministic actions (``"actions"``) and ``"action_dist_inputs"``."""
        raise NotImplementedError

    @abc.abstractmethod
    def forward_exploration(
        self, leaves: list[Tensor], generator: torch.Generator | None, timestep: int
    ) -> dict[str, Tensor]:
        """Exploratory ``"actions"`` (unclipped) plus algorithm-specific extras."""
        raise NotImplementedError

    @abc.abstractmethod
    def forward_train(self, leaves: list[Tensor]) -> dict[str, Tensor]:
        """Everything the loss needs, with gradients."""
        raise NotImplementedError

    def forward(self, leaves: list[Tensor]) -> dict[str, Tensor]:
        """Alias of :meth:`forward_inference` (what an exporter traces)."""
        return self.forward_inference(leaves)
