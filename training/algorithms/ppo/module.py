"""PPO's actor-critic module: a policy head and a value head over (optionally shared) encoders."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from torch import Tensor, nn

from training import columns as cols
from training.config_sections import ModelConfig
from training.distributions import ActionDistribution, dist_inputs_size
from training.rl_module import Encoder, RLModule, orthogonal_init

__all__ = ["PPOModule"]


class PPOModule(RLModule):
    """Actor-critic: categorical or diagonal-Gaussian policy plus a state-value function.

    Args:
        observation_space: The env's observation space.
        action_space: Discrete or Box.
        model: Architecture settings (``vf_share_layers`` shares the encoder).
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
        super().__init__(
            observation_space, action_space, model, observation_filter=observation_filter
        )
        flat_dim, images = self.preprocessor.flat_dim, self.preprocessor.image_shapes
        self.pi_encoder = Encoder(flat_dim, images, model)
        self.vf_encoder = None if model.vf_share_layers else Encoder(flat_dim, images, model)
        out = self.pi_encoder.out_dim
        if self.is_box_action:
            action_dim = dist_inputs_size(action_space) // 2
            self.pi_head = nn.Linear(out, action_dim)
            self.log_std = nn.Parameter(torch.zeros(action_dim))
        else:
            self.pi_head = nn.Linear(out, dist_inputs_size(action_space))
        self.vf_head = nn.Linear(out, 1)
        orthogonal_init(self.pi_head, 0.01)
        orthogonal_init(self.vf_head, 1.0)

    def _dist_inputs(self, pi_features: Tensor) -> Tensor:
        head: Tensor = self.pi_head(pi_features)
        if self.is_box_action:
            return torch.cat([head, self.log_std.expand_as(head)], dim=-1)
        return head

    def _heads(self, leaves: list[Tensor]) -> tuple[Tensor, Tensor]:
        obs = self.encode_inputs(leaves)
        pi_features = self.pi_encoder(obs)
        vf_features = pi_features if self.vf_encoder is None else self.vf_encoder(obs)
        values: Tensor = self.vf_head(vf_features).squeeze(-1)
        return self._dist_inputs(pi_features), values

    def forward_train(self, leaves: list[Tensor]) -> dict[str, Tensor]:
        """``action_dist_inputs`` and ``vf_preds`` with gradients."""
        dist_inputs, values = self._heads(leaves)
        return {cols.ACTION_DIST_INPUTS: dist_inputs, cols.VF_PREDS: values}

    def compute_values(self, leaves: list[Tensor]) -> Tensor:
        """State values ``V(s)`` for a batch."""
        return self._heads(leaves)[1]

    def forward_exploration(
        self, leaves: list[Tensor], generator: torch.Generator | None, timestep: int
    ) -> dict[str, Tensor]:
        """Sampled actions with their log-probabilities."""
        dist_inputs = self._dist_inputs(self.pi_encoder(self.encode_inputs(leaves)))
        dist = ActionDistribution(self.action_space, dist_inputs)
        actions = dist.sample(generator)
        return {cols.ACTIONS: actions, cols.ACTION_LOGP: dist.log_prob(actions)}

    def forward_inference(self, leaves: list[Tensor]) -> dict[str, Tensor]:
        """Deterministic actions (argmax / clipped mean) and the distribution inputs."""
        dist_inputs = self._dist_inputs(self.pi_encoder(self.encode_inputs(leaves)))
        if self.is_box_action:
            mean = dist_inputs[:, : dist_inputs.shape[1] // 2]
            actions = self.clip_actions(mean).reshape(mean.shape[0], *self.action_space.shape)  # type: ignore[misc]
        else:
            start = int(self.action_space.start)  # type: ignore[attr-defined]
            actions = dist_inputs.argmax(dim=-1) + start
        return {cols.ACTION_DIST_INPUTS: dist_inputs, cols.ACTIONS: actions}
