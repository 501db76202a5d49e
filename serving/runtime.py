"""``PolicyRuntime``: one verified artifact, its graph runner, and action sampling.

The graph runs on onnxruntime (``backend="onnx"``, the default) or torch (``"torch_export"``,
or the legacy ``"torchscript"`` when explicitly allowed), on CPU or CUDA.

Deterministic actions come straight from the graph. ``explore=True`` samples from the
distribution inputs outside the graph: categorical (Gumbel-max over logits), diagonal Gaussian
(clipped into the action space), squashed Gaussian (SAC: ``low + (tanh(u) + 1) / 2 *
(high - low)``, ``u ~ N(mean, std)``, as :class:`training.distributions.SquashedGaussian`
samples in training), or epsilon-greedy over Q-values. A ``seed`` makes one request's sample
reproducible; without one, a fresh generator is used.

A recurrent policy's graph also takes its state (after the observation leaves) and returns the
next one; the runtime carries none of it. Whoever asks for actions passes the state in
(``state=None``: the initial state, zeros) and keeps what comes back in
:attr:`ActionBatch.state`: the HTTP client carries it from request to answer to request, a
session keeps it on the server per agent (:mod:`serving.recurrent`). An LSTM that reads the
previous action and reward (the manifest's ``previous``) takes them the same way
(``previous=None``: zeros, an episode's first step).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import gymnasium as gym
import numpy as np

from exporters import Artifact, load_artifact
from exporters.manifest import StateSpec, TensorSpec

__all__ = [
    "BACKENDS",
    "ActionBatch",
    "Backend",
    "GraphOutputs",
    "GraphRunner",
    "PolicyRuntime",
    "Previous",
    "State",
]

Backend = Literal["onnx", "torch_export", "torchscript"]
BACKENDS: tuple[Backend, ...] = ("onnx", "torch_export", "torchscript")


State = list[np.ndarray]
"""A recurrent policy's state for a batch: one array per :class:`StateSpec`, rows first."""
Previous = list[np.ndarray]
"""The previous actions and rewards of a batch: one array per the manifest's ``previous``."""


class GraphRunner(Protocol):
    """Runs an artifact's inference graph: its inputs in, its outputs out, in order."""

    def run(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        """``(action_dist_inputs, actions, *next_state)`` for the leaves (then the state)."""
        ...


class GraphOutputs(NamedTuple):
    """One graph call's outputs for a batch."""

    action_dist_inputs: np.ndarray
    actions: np.ndarray
    state: State | None
    """A recurrent policy's next state (``None``: feed-forward)."""


@dataclass(frozen=True)
class ActionBatch:
    """Actions for a batch, the distribution inputs they came from, and the next state.

    ``batched_requests`` counts the requests that shared the inference call (> 1 when Ray
    Serve combined concurrent requests). ``state`` is a recurrent policy's state after these
    actions, to pass with the next observations (``None``: feed-forward).
    """

    actions: np.ndarray
    action_dist_inputs: np.ndarray
    batched_requests: int = 1
    state: State | None = None


class PolicyRuntime:
    """A loaded, verified policy ready to answer ``compute_actions``.

    Args:
        artifact: A verified artifact (see :func:`exporters.load_artifact`).
        backend: Which of the artifact's formats runs the graph.
        device: ``"cpu"`` or ``"cuda"``: onnxruntime's CUDA provider or torch's CUDA device.
        intra_op_num_threads: Threads per call: onnxruntime's session (default 1), or torch's
            whole process (default: torch's own setting, left alone).
        epsilon: Exploration rate for Q-value policies when ``explore=True``.
        allow_torchscript: Accept the pickle-based TorchScript backend (trusted artifacts).

    Raises:
        exporters.ArtifactError: The artifact lacks the backend's format, or it is unsafe.
    """

    def __init__(
        self,
        artifact: Artifact,
        *,
        backend: Backend = "onnx",
        device: str = "cpu",
        intra_op_num_threads: int | None = None,
        epsilon: float = 0.05,
        allow_torchscript: bool = False,
    ) -> None:
        self.artifact = artifact
        self.state_specs: list[StateSpec] = list(artifact.manifest.state or [])
        """A recurrent policy's state, part by part (``[]``: feed-forward)."""
        self.is_recurrent = bool(self.state_specs)
        """Whether the policy carries a state from one step to the next (read per request)."""
        self.previous_specs: list[TensorSpec] = list(artifact.manifest.previous or [])
        """The previous action and reward the policy reads (``[]``: none)."""
        self.previous_names = [spec.name for spec in self.previous_specs]
        self.name = artifact.manifest.policy_name
        """The name it is served under (the registry sets it; the manifest's until then)."""
        self.backend = backend
        self.device = device
        self.session: GraphRunner
        if backend == "onnx":
            gpu = device.startswith("cuda")
            self.session = artifact.onnx_policy(
                intra_op_num_threads=intra_op_num_threads or 1,
                providers=["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else None,
            )
        else:
            from exporters.torch_policy import TorchPolicy

            self.session = TorchPolicy(
                artifact,
                backend,
                device=device,
                num_threads=intra_op_num_threads,
                allow_torchscript=allow_torchscript,
            )
        self.epsilon = epsilon
        self.distribution = artifact.manifest.action_distribution
        space = artifact.action_space
        # Flat float32 bounds, as the module holds them: training rescales with exactly these.
        self._box_bounds = (
            (
                np.asarray(space.low, dtype=np.float32).reshape(-1),
                np.asarray(space.high, dtype=np.float32).reshape(-1),
            )
            if isinstance(space, gym.spaces.Box)
            else None
        )

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> PolicyRuntime:
        """Verify and load an artifact directory."""
        return cls(load_artifact(path), **kwargs)

    @property
    def version(self) -> str:
        """The artifact's content-derived version."""
        return self.artifact.version

    @property
    def observation_space(self) -> gym.Space[Any]:
        """The policy's observation space."""
        return self.artifact.observation_space

    @property
    def action_space(self) -> gym.Space[Any]:
        """The policy's action space."""
        return self.artifact.action_space

    def initial_state(self, rows: int) -> State:
        """The state an episode starts from (zeros), for ``rows`` rows."""
        return [
            np.zeros((rows, *(int(side) for side in spec.shape[1:])), np.dtype(spec.dtype))
            for spec in self.state_specs
        ]

    def initial_previous(self, rows: int) -> Previous:
        """The previous action and reward of an episode's first step (zeros), for ``rows``."""
        return [
            np.zeros((rows, *(int(side) for side in spec.shape[1:])), np.dtype(spec.dtype))
            for spec in self.previous_specs
        ]

    def compute(
        self,
        leaves: list[np.ndarray],
        *,
        explore: bool = False,
        seed: int | None = None,
        state: State | None = None,
        previous: Previous | None = None,
    ) -> ActionBatch:
        """Actions for a batch of validated observation leaves (and a recurrent state)."""
        dist_inputs, actions, next_state = self.run_graph(leaves, state, previous)
        if explore:
            actions = self.sample(dist_inputs, actions, seed)
        return ActionBatch(actions, dist_inputs, state=next_state)

    def run_graph(
        self,
        leaves: list[np.ndarray],
        state: State | None = None,
        previous: Previous | None = None,
    ) -> GraphOutputs:
        """The graph's outputs; batches beyond the artifact's limit are split and merged.

        Args:
            leaves: The observation leaves of a batch.
            state: A recurrent policy's state for those rows (``None``: the initial state);
                ignored for a feed-forward policy.
            previous: The previous actions and rewards, for a policy that reads them
                (``None``: zeros); ignored otherwise.
        """
        rows = leaves[0].shape[0]
        inputs = list(leaves)
        if self.previous_specs:
            inputs += self.initial_previous(rows) if previous is None else previous
        if self.is_recurrent:
            inputs += self.initial_state(rows) if state is None else state
        limit = self.artifact.manifest.max_batch_size
        if rows <= limit:
            outputs = self.session.run(inputs)
        else:
            parts = [
                self.session.run([x[i : i + limit] for x in inputs]) for i in range(0, rows, limit)
            ]
            outputs = tuple(np.concatenate(column) for column in zip(*parts, strict=True))
        dist_inputs, actions, *next_state = outputs
        return GraphOutputs(dist_inputs, actions, next_state if self.is_recurrent else None)

    def _squash(self, u: np.ndarray) -> np.ndarray:
        """``(batch, action_dim)`` Gaussian draws -> the Box, in float32 as training computes it."""
        assert self._box_bounds is not None
        low, high = self._box_bounds
        squashed: np.ndarray = low + (np.tanh(u) + np.float32(1.0)) * ((high - low) / 2)
        return squashed

    def sample(self, dist_inputs: np.ndarray, greedy: np.ndarray, seed: int | None) -> np.ndarray:
        """Exploratory actions drawn from the distribution inputs (reproducible with a seed)."""
        return self._sample(dist_inputs, greedy, np.random.default_rng(seed))

    def _sample(
        self, dist_inputs: np.ndarray, greedy: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        space = self.action_space
        if self.distribution in ("diag_gaussian", "squashed_gaussian"):
            assert isinstance(space, gym.spaces.Box)
            mean, log_std = np.split(dist_inputs, 2, axis=-1)
            sample = mean + np.exp(log_std) * rng.standard_normal(mean.shape, dtype=np.float32)
            if self.distribution == "squashed_gaussian":
                sample = self._squash(sample)
            sample = sample.reshape(greedy.shape)
            # For the squashed Gaussian the clip only catches float rounding: the rescale of a
            # saturated tanh lands an ulp past ``high`` for some bounds.
            clipped: np.ndarray = np.clip(sample, space.low, space.high).astype(space.dtype)
            return clipped
        assert isinstance(space, gym.spaces.Discrete)
        start = int(space.start)
        if self.distribution == "categorical":
            gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, dist_inputs.shape)))
            sampled: np.ndarray = np.argmax(dist_inputs + gumbel, axis=-1) + start
            return sampled.astype(np.int64)
        explore = rng.uniform(size=greedy.shape[0]) < self.epsilon
        random_actions = rng.integers(start, start + int(space.n), size=greedy.shape[0])
        return np.where(explore, random_actions, greedy).astype(np.int64)
