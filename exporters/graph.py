"""The exported inference graph: raw observation leaves in, distribution inputs and actions out.

Everything between the env's observation and the action is inside: preprocessing (one-hot,
flattening, image scaling), the frozen observation filter, the policy network, the
deterministic action and, for Box actions, clipping into the bounds. Sampling stays outside
(serving samples from the distribution inputs).

The graph clips Box actions itself, whatever the module did: SAC's squashed mean
``low + (tanh(mean) + 1) / 2 * (high - low)`` lands one float32 ulp above ``high`` for about one
bound in seven once ``tanh`` saturates to 1 (``|mean|`` > 9), and a served action outside the
space is a bug a client sees (``Box.contains`` fails). For PPO, whose module already clips, the
second clip is a no-op (bit-identical actions) costing one elementwise op per call.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from formats.leaves import flatten_leaves
from training import columns as cols
from training.rl_module import RLModule

__all__ = [
    "OUTPUT_NAMES",
    "STATE_INPUT_NAMES",
    "STATE_OUTPUT_NAMES",
    "InferenceGraph",
    "example_inputs",
    "example_previous",
    "example_state",
    "input_specs",
    "previous_specs",
]

OUTPUT_NAMES = ("action_dist_inputs", "actions")
STATE_INPUT_NAMES = (cols.STATE_IN_H, cols.STATE_IN_C)
"""A recurrent graph's state inputs, after the observation leaves (named, never positional)."""
STATE_OUTPUT_NAMES = (cols.STATE_OUT_H, cols.STATE_OUT_C)
"""A recurrent graph's state outputs, after ``OUTPUT_NAMES``: the next step's state inputs."""


class InferenceGraph(nn.Module):
    """``forward(*leaves) -> (action_dist_inputs, actions)`` around a module's inference path.

    A recurrent module's graph takes its state after the observation leaves (``state_in_h``,
    ``state_in_c``) and returns the next state after the actions (``state_out_h``,
    ``state_out_c``). An LSTM that reads the previous action and reward takes them between
    the leaves and the state (``prev_actions``, ``prev_rewards``).

    Args:
        module: A trained module (eval mode).
    """

    def __init__(self, module: RLModule) -> None:
        super().__init__()
        self.module = module
        self.previous_names = list(module.initial_previous(1))
        """The previous-input names the graph takes (in order), if any."""
        self.eval()

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """Run the whole inference path on a batch of raw observation leaves (and state)."""
        if not self.module.is_recurrent:
            out = self.module.forward_inference(list(inputs))
            return out["action_dist_inputs"], self.module.clip_actions(out["actions"])
        names = [*self.previous_names, *STATE_INPUT_NAMES]
        count = len(names)
        state = dict(zip(names, inputs[-count:], strict=True))
        out = self.module.forward_inference(list(inputs[:-count]), state=state)  # type: ignore[call-arg]
        dist_inputs, actions = out["action_dist_inputs"], self.module.clip_actions(out["actions"])
        return dist_inputs, actions, *(out[name] for name in STATE_OUTPUT_NAMES)


def _leaf_dtype(space: gym.Space[Any]) -> np.dtype[Any]:
    if isinstance(space, gym.spaces.Discrete):
        return np.dtype(np.int64)
    return np.dtype(space.dtype)


def input_specs(observation_space: gym.Space[Any]) -> list[dict[str, Any]]:
    """Name, observation path, per-row shape and dtype of each graph input, in order."""
    return [
        {
            "name": f"obs_{index}",
            "path": path,
            "shape": ["batch", *(space.shape or ())],
            "dtype": str(_leaf_dtype(space)),
        }
        for index, (path, space) in enumerate(flatten_leaves(observation_space))
    ]


def example_inputs(observation_space: gym.Space[Any], batch: int = 3) -> tuple[Tensor, ...]:
    """A batch of valid observations as graph inputs (for tracing and exporting)."""
    leaves = flatten_leaves(observation_space)
    rows = []
    for _, space in leaves:
        space.seed(0)
        samples = [np.asarray(space.sample(), dtype=_leaf_dtype(space)) for _ in range(batch)]
        rows.append(torch.from_numpy(np.stack(samples)))
    return tuple(rows)


def example_state(module: RLModule, batch: int, seed: int = 0) -> tuple[Tensor, ...]:
    """A batch of states (random, in the LSTM's range) as graph inputs; ``()`` if feed-forward."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(
        torch.rand(zeros.shape, generator=generator) * 2.0 - 1.0
        for zeros in module.initial_state(batch).values()
    )


def previous_specs(module: RLModule) -> list[dict[str, Any]]:
    """Name, per-row shape and dtype of each previous-action/reward input (``[]``: none)."""
    return [
        {"name": name, "shape": ["batch", *zeros.shape[1:]], "dtype": str(zeros.numpy().dtype)}
        for name, zeros in module.initial_previous(1).items()
    ]


def example_previous(module: RLModule, batch: int, seed: int = 0) -> tuple[Tensor, ...]:
    """A batch of previous actions (inside the space) and rewards; ``()`` if none is read."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for name, zeros in module.initial_previous(batch).items():
        space = module.action_space
        if name == cols.PREV_REWARDS:
            examples.append(torch.randn(zeros.shape, generator=generator))
        elif isinstance(space, gym.spaces.Discrete):
            low = int(space.start)
            examples.append(torch.randint(low, low + int(space.n), (batch,), generator=generator))
        else:
            low_t = torch.as_tensor(np.asarray(space.low, np.float32))  # type: ignore[attr-defined]
            high_t = torch.as_tensor(np.asarray(space.high, np.float32))  # type: ignore[attr-defined]
            unit = torch.rand(zeros.shape, generator=generator)
            examples.append(low_t + unit * (high_t - low_t))
    return tuple(examples)
