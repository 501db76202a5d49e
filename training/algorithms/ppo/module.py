"""PPO's actor-critic module: a policy head and a value head over (optionally shared) encoders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from training import columns as cols
from training.config_sections import ModelConfig
from training.distributions import ActionDistribution, dist_inputs_size
from training.rl_module import Encoder, RLModule, orthogonal_init

__all__ = ["PPOModule"]


class PPOModule(RLModule):
    """Actor-critic: categorical or diagonal-Gaussian policy plus a state-value function.

    With ``model.use_lstm`` an LSTM cell sits between the (policy) encoder and both heads:
    the policy and the value then read the LSTM's output, and every forward pass takes and
    returns the state (:data:`~training.columns.STATE_IN_H` ... ``STATE_OUT_C``). A state
    is reset to the initial one where ``starts`` marks the first step of an episode. With
    ``lstm_use_prev_action`` / ``lstm_use_prev_reward`` the LSTM also reads the previous action
    (one-hot for Discrete) and reward, fed in the same dict as the state
    (:data:`~training.columns.PREV_ACTIONS`, ``PREV_REWARDS``; absent: zeros).

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
        self.is_recurrent = model.use_lstm
        # With an LSTM both heads read its output: one state, as RLlib's LSTM wrapper has.
        shared = model.vf_share_layers or model.use_lstm
        self.vf_encoder = None if shared else Encoder(flat_dim, images, model)
        out = self.pi_encoder.out_dim
        self.previous_size = _previous_size(action_space, model)
        """Inputs the LSTM reads besides the encoder's: the previous action and reward."""
        lstm_in = out + self.previous_size
        self.lstm = nn.LSTMCell(lstm_in, model.lstm_cell_size) if model.use_lstm else None
        if self.lstm is not None:
            out = model.lstm_cell_size
        if self.is_box_action:
            action_dim = dist_inputs_size(action_space) // 2
            self.pi_head = nn.Linear(out, action_dim)
            self.log_std = nn.Parameter(torch.zeros(action_dim))
        else:
            self.pi_head = nn.Linear(out, dist_inputs_size(action_space))
        self.vf_head = nn.Linear(out, 1)
        orthogonal_init(self.pi_head, 0.01)
        orthogonal_init(self.vf_head, 1.0)

    # ----------------------------------------------------------------- state
    def initial_state(self, batch: int) -> dict[str, Tensor]:
        """Zeros (``batch``, cell size) for the hidden and the cell vector."""
        if self.lstm is None:
            return {}
        device = self.vf_head.weight.device
        zeros = torch.zeros(batch, self.lstm.hidden_size, device=device)
        return {cols.STATE_IN_H: zeros, cols.STATE_IN_C: zeros.clone()}

    def _step(
        self, features: Tensor, state: dict[str, Tensor] | None, starts: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One LSTM step from ``state`` (initial where ``starts``); the output and new state."""
        assert self.lstm is not None
        if state is None:
            state = self.initial_state(features.shape[0])
        h, c = state[cols.STATE_IN_H], state[cols.STATE_IN_C]
        if starts is not None:
            keep = (~starts).to(h.dtype).unsqueeze(1)
            h, c = h * keep, c * keep
        h, c = self.lstm(self._with_previous(features, state), (h, c))
        return h, {cols.STATE_OUT_H: h, cols.STATE_OUT_C: c}

    def _with_previous(self, features: Tensor, inputs: Mapping[str, Tensor]) -> Tensor:
        """The encoder's features with the previous action (one-hot) and reward appended."""
        if not self.previous_size:
            return features
        batch = features.shape[0]
        parts = [features]
        if self.model_config.lstm_use_prev_action:
            prev = inputs.get(cols.PREV_ACTIONS)
            if prev is None:
                prev = self.initial_previous(batch)[cols.PREV_ACTIONS]
            space = self.action_space
            if isinstance(space, gym.spaces.Discrete):
                n, start = int(space.n), int(space.start)
                index = (prev.long() - start).clamp(0, n - 1)
                parts.append(torch.nn.functional.one_hot(index, n).to(features.dtype))
            else:
                parts.append(prev.reshape(batch, -1).to(features.dtype))
        if self.model_config.lstm_use_prev_reward:
            reward = inputs.get(cols.PREV_REWARDS)
            if reward is None:
                reward = torch.zeros(batch, device=features.device)
            parts.append(reward.reshape(batch, 1).to(features.dtype))
        return torch.cat(parts, dim=-1)

    # ----------------------------------------------------------------- heads
    def _dist_inputs(self, pi_features: Tensor) -> Tensor:
        head: Tensor = self.pi_head(pi_features)
        if self.is_box_action:
            return torch.cat([head, self.log_std.expand_as(head)], dim=-1)
        return head

    def _features(
        self, leaves: list[Tensor], state: dict[str, Tensor] | None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Policy features, value features and (recurrent) the new state, for one step."""
        obs = self.encode_inputs(leaves)
        pi_features = self.pi_encoder(obs)
        if self.lstm is not None:
            out, new_state = self._step(pi_features, state)
            return out, out, new_state
        vf_features = pi_features if self.vf_encoder is None else self.vf_encoder(obs)
        return pi_features, vf_features, {}

    def _heads(self, leaves: list[Tensor]) -> tuple[Tensor, Tensor]:
        pi_features, vf_features, _ = self._features(leaves, None)
        values: Tensor = self.vf_head(vf_features).squeeze(-1)
        return self._dist_inputs(pi_features), values

    def forward_train(self, leaves: list[Tensor]) -> dict[str, Tensor]:
        """``action_dist_inputs`` and ``vf_preds`` with gradients (feed-forward rows)."""
        dist_inputs, values = self._heads(leaves)
        return {cols.ACTION_DIST_INPUTS: dist_inputs, cols.VF_PREDS: values}

    def forward_train_sequences(
        self,
        leaves: list[Tensor],
        state: dict[str, Tensor],
        starts: Tensor,
        previous: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """``action_dist_inputs`` ``(L, B, D)`` and ``vf_preds`` ``(L, B)`` along sequences.

        Args:
            leaves: Observation leaves, time-major ``(L, B, ...)``.
            state: The state at each sequence's first step, ``(B, cell)`` each.
            starts: ``(L, B)``: where an episode starts (the state is reset before the step).
            previous: The previous action and reward of every step, ``(L, B, ...)``
                (:meth:`initial_previous`'s keys), when the LSTM reads them.
        """
        steps, batch = starts.shape
        flat = [leaf.reshape(steps * batch, *leaf.shape[2:]) for leaf in leaves]
        features = self.pi_encoder(self.encode_inputs(flat)).reshape(steps, batch, -1)
        outputs = []
        current: dict[str, Tensor] = state
        for t in range(steps):
            if previous:
                current = {**current, **{key: value[t] for key, value in previous.items()}}
            out, new_state = self._step(features[t], current, starts[t])
            current = {cols.STATE_IN_H: new_state[cols.STATE_OUT_H]}
            current[cols.STATE_IN_C] = new_state[cols.STATE_OUT_C]
            outputs.append(out)
        core = torch.stack(outputs)  # (L, B, cell)
        values = self.vf_head(core).squeeze(-1)
        return {cols.ACTION_DIST_INPUTS: self._dist_inputs(core), cols.VF_PREDS: values}

    def compute_values(
        self, leaves: list[Tensor], state: dict[str, Tensor] | None = None
    ) -> Tensor:
        """State values ``V(s)`` for a batch (recurrent: from ``state``, default initial)."""
        _, vf_features, _ = self._features(leaves, state)
        values: Tensor = self.vf_head(vf_features).squeeze(-1)
        return values

    def forward_exploration(
        self,
        leaves: list[Tensor],
        generator: torch.Generator | None,
        timestep: int,
        state: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Sampled actions with their log-probabilities (and, recurrent, the new state)."""
        pi_features, _, new_state = self._features(leaves, state)
        dist_inputs = self._dist_inputs(pi_features)
        dist = ActionDistribution(self.action_space, dist_inputs)
        actions = dist.sample(generator)
        return {cols.ACTIONS: actions, cols.ACTION_LOGP: dist.log_prob(actions), **new_state}

    def forward_inference(
        self, leaves: list[Tensor], state: dict[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Deterministic actions (argmax / clipped mean) and the distribution inputs.

        A recurrent module also returns its new state.
        """
        pi_features, _, new_state = self._features(leaves, state)
        dist_inputs = self._dist_inputs(pi_features)
        if self.is_box_action:
            mean = dist_inputs[:, : dist_inputs.shape[1] // 2]
            actions = self.clip_actions(mean).reshape(mean.shape[0], *self.action_space.shape)  # type: ignore[misc]
        else:
            start = int(self.action_space.start)  # type: ignore[attr-defined]
            actions = dist_inputs.argmax(dim=-1) + start
        return {cols.ACTION_DIST_INPUTS: dist_inputs, cols.ACTIONS: actions, **new_state}


def _previous_size(action_space: gym.Space[Any], model: ModelConfig) -> int:
    """How many numbers the previous action (one-hot if Discrete) and reward add."""
    size = 0
    if model.lstm_use_prev_action:
        if isinstance(action_space, gym.spaces.Discrete):
            size += int(action_space.n)
        else:
            size += int(np.prod(action_space.shape or ()))
    if model.lstm_use_prev_reward:
        size += 1
    return size
