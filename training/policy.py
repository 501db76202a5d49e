"""``Policy``: a view on an algorithm's module for computing actions and inspecting the model.

As in RLlib's "Accessing Model State" examples, it exposes the preprocessed (and filtered)
observation, the action distribution for a batch, the value estimate (PPO) and the Q-values
(DQN: every action's; SAC: each critic's for given actions). Actions use exactly the
training-time preprocessing and the frozen filter.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from formats.leaves import flatten_leaves, obs_to_leaves
from training import columns as cols
from training.distributions import ActionDistribution, SquashedGaussian
from training.rl_module import RLModule

__all__ = ["Policy"]


class Policy:
    """Compute actions and read model outputs for raw observations.

    Args:
        module: The algorithm's module.
        device: The module's device.
        explore_default: What ``explore=None`` means.
        timestep: Env steps sampled so far (drives exploration schedules such as DQN's
            epsilon).
    """

    def __init__(
        self,
        module: RLModule,
        device: torch.device,
        *,
        explore_default: bool,
        timestep: int = 0,
    ) -> None:
        self.model = module
        self.device = device
        self.explore_default = explore_default
        self.timestep = timestep
        self.observation_space = module.observation_space
        self.action_space = module.action_space

    def _leaves(self, observations: Any, *, batched: bool) -> list[Tensor]:
        space = self.observation_space
        if (
            batched
            and isinstance(observations, list | tuple)
            and not isinstance(space, gym.spaces.Tuple)
        ):
            per_obs = [obs_to_leaves(space, o) for o in observations]
            leaves = [np.stack(column) for column in zip(*per_obs, strict=True)]
        else:
            leaves = obs_to_leaves(space, observations, batched=batched)
            if not batched:
                leaves = [np.asarray(x)[None] for x in leaves]
        for (path, leaf_space), array in zip(flatten_leaves(space), leaves, strict=True):
            expected = leaf_space.shape
            if expected is not None and tuple(array.shape[1:]) != tuple(expected):
                raise ValueError(
                    f"observation leaf {path!r}: expected shape {tuple(expected)} per "
                    f"observation, got {tuple(array.shape[1:])}"
                )
        return [torch.as_tensor(np.asarray(x), device=self.device) for x in leaves]

    @property
    def is_recurrent(self) -> bool:
        """Whether the policy carries a state from step to step (``model.use_lstm``)."""
        return self.model.is_recurrent

    def get_initial_state(self) -> list[np.ndarray]:
        """An episode's first state: ``[hidden, cell]``, each ``(cell size,)``.

        ``[]`` for a feed-forward policy (RLlib's ``Policy.get_initial_state``).
        """
        return [v[0].cpu().numpy() for v in self.model.initial_state(1).values()]

    @torch.no_grad()
    def compute_actions(
        self,
        observations: Any,
        state_batches: list[Any] | None = None,
        prev_action_batch: Any = None,
        prev_reward_batch: Any = None,
        explore: bool | None = None,
    ) -> Any:
        """Actions for a batch (a list of observations or batched arrays / dicts of arrays).

        A recurrent policy takes ``state_batches`` (``[hidden (B, cell), cell (B, cell)]``;
        ``None``: every row at its initial state) and returns ``(actions, state_outs, {})``;
        a feed-forward one returns the actions alone. One whose LSTM reads the previous action
        and reward (``lstm_use_prev_*``) takes them per row (``None``: zeros, an episode's
        first step); other policies ignore them, as RLlib's did.
        """
        leaves = self._leaves(observations, batched=True)
        explore = self.explore_default if explore is None else explore
        if not self.is_recurrent:
            return self._actions(leaves, explore)[0]
        rows = int(leaves[0].shape[0])
        state = self._state(state_batches, rows)
        state.update(self._previous(prev_action_batch, prev_reward_batch, rows))
        actions, state_out = self._actions(leaves, explore, state)
        return actions, state_out, {}

    def compute_single_action(
        self,
        observation: Any,
        state: list[Any] | None = None,
        prev_action: Any = None,
        prev_reward: float | None = None,
        explore: bool | None = None,
    ) -> Any:
        """Action for one observation (a Python int for Discrete, an array for Box).

        A recurrent policy takes ``state`` (``[hidden, cell]``; ``None``: the initial state)
        and returns ``(action, state_out, {})``, as RLlib's old stack did; a feed-forward one
        returns the action alone. ``prev_action`` / ``prev_reward``: the action taken and the
        reward received at the step before, for an LSTM that reads them (``None``: zeros).
        """
        with torch.no_grad():
            leaves = self._leaves(observation, batched=False)
            explore = self.explore_default if explore is None else explore
            batched = None if state is None else [np.asarray(s)[None] for s in state]
            recurrent = self._state(batched, 1) if self.is_recurrent else None
            if recurrent is not None:
                one = (
                    None if prev_action is None else np.asarray(prev_action)[None],
                    None if prev_reward is None else np.asarray([prev_reward]),
                )
                recurrent.update(self._previous(*one, 1))
            actions, state_out = self._actions(leaves, explore, recurrent)
        action: Any = actions[0]
        if isinstance(self.action_space, gym.spaces.Discrete):
            action = int(action)
        if not self.is_recurrent:
            return action
        return action, [s[0] for s in state_out], {}

    def _state(self, batches: list[Any] | None, rows: int) -> dict[str, Tensor]:
        initial = self.model.initial_state(rows)
        if batches is None:
            return initial
        if len(batches) != len(initial):
            raise ValueError(
                f"state: expected {len(initial)} arrays (hidden, cell), got {len(batches)}"
            )
        state = {}
        for (key, zeros), given in zip(initial.items(), batches, strict=True):
            array = np.asarray(given, dtype=np.float32)
            if array.shape != tuple(zeros.shape):
                raise ValueError(
                    f"state: expected {tuple(zeros.shape)} per array, got {array.shape}"
                )
            state[key] = torch.as_tensor(array, device=self.device)
        return state

    def _previous(self, actions: Any, rewards: Any, rows: int) -> dict[str, Tensor]:
        """The previous actions and rewards the LSTM reads, as tensors (zeros where ``None``)."""
        previous = self.model.initial_previous(rows)
        given = {cols.PREV_ACTIONS: actions, cols.PREV_REWARDS: rewards}
        for key, zeros in previous.items():
            if given[key] is None:
                continue
            array = np.asarray(given[key]).astype(zeros.cpu().numpy().dtype)
            if array.shape != tuple(zeros.shape):
                raise ValueError(f"{key}: expected shape {tuple(zeros.shape)}, got {array.shape}")
            previous[key] = torch.as_tensor(array, device=self.device)
        return previous

    def _actions(
        self, leaves: list[Tensor], explore: bool, state: dict[str, Tensor] | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        recurrent: dict[str, Any] = {} if state is None else {"state": state}
        if explore:
            out = self.model.forward_exploration(leaves, None, self.timestep, **recurrent)
            actions = self.model.clip_actions(out[cols.ACTIONS])
        else:
            out = self.model.forward_inference(leaves, **recurrent)
            actions = out[cols.ACTIONS]
        result: np.ndarray = actions.cpu().numpy()
        if isinstance(self.action_space, gym.spaces.Box):
            result = result.astype(self.action_space.dtype, copy=False)
        state_out = [out[k].cpu().numpy() for k in (cols.STATE_OUT_H, cols.STATE_OUT_C) if k in out]
        return result, state_out

    @torch.no_grad()
    def preprocess(self, observations: Any) -> np.ndarray:
        """Preprocessed, filtered flat features of a batch (images excluded)."""
        result: np.ndarray = (
            self.model.encode_inputs(self._leaves(observations, batched=True)).flat.cpu().numpy()
        )
        return result

    @torch.no_grad()
    def action_distribution(self, observations: Any) -> ActionDistribution | SquashedGaussian:
        """The action distribution for a batch: categorical / Gaussian / squashed Gaussian (SAC).

        For DQN it is the categorical over the Q-values taken as logits.
        """
        inputs = self.model.forward_inference(self._leaves(observations, batched=True))
        distribution: ActionDistribution | SquashedGaussian
        distribution = self.model.get_action_distribution(inputs[cols.ACTION_DIST_INPUTS])
        return distribution

    @torch.no_grad()
    def value_function(self, observations: Any) -> np.ndarray:
        """State values ``V(s)`` (PPO)."""
        compute = getattr(self.model, "compute_values", None)
        if compute is None:
            raise AttributeError(f"{type(self.model).__name__} has no value function")
        result: np.ndarray = compute(self._leaves(observations, batched=True)).cpu().numpy()
        return result

    @torch.no_grad()
    def q_values(self, observations: Any, actions: Any = None) -> np.ndarray:
        """Q-values of a batch.

        Args:
            observations: A batch of observations.
            actions: SAC only: a batch of actions (the space's layout); ``None`` takes the
                deterministic ones.

        Returns:
            DQN: ``(batch, num_actions)``, every action's. SAC: ``(batch, num_q)``, each Q
            network's value of the actions (two columns with ``twin_q``).
        """
        compute = getattr(self.model, "compute_q_values", None)
        if compute is None:
            raise AttributeError(f"{type(self.model).__name__} has no Q-values")
        leaves = self._leaves(observations, batched=True)
        if actions is None:
            result: np.ndarray = compute(leaves).cpu().numpy()
            return result
        action_tensor = torch.as_tensor(np.asarray(actions), device=self.device)
        result = compute(leaves, action_tensor).cpu().numpy()
        return result

    def get_weights(self) -> dict[str, np.ndarray]:
        """Module state as numpy arrays."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Load module state (numpy arrays or tensors)."""
        state = {k: torch.as_tensor(np.asarray(v), device=self.device) for k, v in weights.items()}
        self.model.load_state_dict(state)
