"""DQN's Q-network: an encoder and a (dueling) Q head, epsilon-greedy exploration."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from torch import Tensor, nn

from training import columns as cols
from training.config_sections import ModelConfig
from training.rl_module import Encoder, RLModule, orthogonal_init

__all__ = ["DQNModule", "linear_epsilon"]


def linear_epsilon(timestep: int, initial: float, final: float, timesteps: int) -> float:
    """Epsilon of a linear schedule from ``initial`` to ``final`` over ``timesteps``."""
    fraction = min(1.0, max(0, timestep) / timesteps)
    return initial + fraction * (final - initial)


class DQNModule(RLModule):
    """Q-network ``Q(s, .)`` with an optional dueling head.

    Args:
        observation_space: The env's observation space.
        action_space: Discrete.
        model: Architecture settings.
        observation_filter: Whether the mean/std filter is on.
        dueling: Split into value and advantage streams.
        epsilon: ``(initial, final, timesteps)`` of the linear epsilon schedule.
    """

    def __init__(
        self,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        model: ModelConfig,
        *,
        observation_filter: bool,
        dueling: bool,
        epsilon: tuple[float, float, int],
    ) -> None:
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(
                f"DQN needs a Discrete action space, got {type(action_space).__name__}; "
                "use PPO for continuous actions"
            )
        super().__init__(
            observation_space, action_space, model, observation_filter=observation_filter
        )
        self.encoder = Encoder(self.preprocessor.flat_dim, self.preprocessor.image_shapes, model)
        self.num_actions = int(action_space.n)
        self.start = int(action_space.start)
        self.dueling = dueling
        self.advantage_head = nn.Linear(self.encoder.out_dim, self.num_actions)
        orthogonal_init(self.advantage_head, 1.0)
        if dueling:
            self.value_head = nn.Linear(self.encoder.out_dim, 1)
            orthogonal_init(self.value_head, 1.0)
        self.epsilon = epsilon

    def compute_q_values(self, leaves: list[Tensor]) -> Tensor:
        """``(batch, num_actions)`` Q-values."""
        features = self.encoder(self.encode_inputs(leaves))
        advantages: Tensor = self.advantage_head(features)
        if not self.dueling:
            return advantages
        value: Tensor = self.value_head(features)
        return value + advantages - advantages.mean(dim=1, keepdim=True)

    def forward_train(self, leaves: list[Tensor]) -> dict[str, Tensor]:
        """Q-values with gradients."""
        return {cols.Q_VALUES: self.compute_q_values(leaves)}

    def forward_inference(self, leaves: list[Tensor]) -> dict[str, Tensor]:
        """Greedy actions; the Q-values are the distribution inputs."""
        q_values = self.compute_q_values(leaves)
        return {
            cols.ACTION_DIST_INPUTS: q_values,
            cols.ACTIONS: q_values.argmax(dim=1) + self.start,
        }

    def forward_exploration(
        self, leaves: list[Tensor], generator: torch.Generator | None, timestep: int
    ) -> dict[str, Tensor]:
        """Epsilon-greedy actions, epsilon from the linear schedule at ``timestep``."""
        q_values = self.compute_q_values(leaves)
        greedy = q_values.argmax(dim=1)
        batch = q_values.shape[0]
        epsilon = linear_epsilon(timestep, *self.epsilon)
        explore = torch.rand(batch, generator=generator) < epsilon
        random_actions = torch.randint(0, self.num_actions, (batch,), generator=generator)
        actions = torch.where(explore.to(greedy.device), random_actions.to(greedy.device), greedy)
        return {cols.ACTIONS: actions + self.start}
