"""Parity checks of exported graphs against the eager module (used before publishing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from exporters.errors import ExportError
from exporters.graph import (
    STATE_OUTPUT_NAMES,
    InferenceGraph,
    example_inputs,
    example_previous,
    example_state,
)
from exporters.manifest import FORMAT_FILES
from exporters.upstream import upstream_warnings_silenced

__all__ = ["load_torch_format", "verify_against_eager"]


def load_torch_format(fmt: str, path: Path) -> Any:
    """Load a TorchScript or ``torch.export`` file as a callable.

    ``torch_export`` archives are checked to hold nothing torch would unpickle
    (:func:`exporters.torch_policy.check_pt2_archive`). TorchScript archives are pickle-based:
    call this on them only for files just written by a trusted exporter.
    """
    from exporters.torch_policy import LiftedProgram, load_exported_program

    with upstream_warnings_silenced():
        if fmt == "torchscript":
            return torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        return LiftedProgram(load_exported_program(path))  # what serving runs


def _runner(fmt: str, directory: Path, names: list[str]) -> Any:
    """``run(*inputs) -> outputs as numpy`` for one exported format."""
    path = directory / FORMAT_FILES[fmt]
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run_onnx(*inputs: torch.Tensor) -> list[np.ndarray]:
            feed = {n: x.numpy() for n, x in zip(names, inputs, strict=True)}
            return list(session.run(None, feed))

        return run_onnx
    model = load_torch_format(fmt, path)

    def run_torch(*inputs: torch.Tensor) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in model(*inputs)]

    return run_torch


def _compare(fmt: str, got: list[np.ndarray], want: list[np.ndarray], discrete: bool) -> None:
    dist, actions, *state = got
    dist_ref, actions_ref, *state_ref = want
    if not np.allclose(dist, dist_ref, rtol=1e-4, atol=1e-5):
        raise ExportError(f"{fmt}: action_dist_inputs differ from the eager module")
    same = (
        np.array_equal(actions, actions_ref)
        if discrete
        else np.allclose(actions, actions_ref, atol=1e-5)
    )
    if not same or actions.dtype != actions_ref.dtype:
        raise ExportError(f"{fmt}: actions differ from the eager module")
    if len(state) != len(state_ref):
        raise ExportError(f"{fmt}: {len(state)} state outputs, expected {len(state_ref)}")
    for name, part, part_ref in zip(STATE_OUTPUT_NAMES, state, state_ref, strict=False):
        if not np.allclose(part, part_ref, rtol=1e-4, atol=1e-5):
            raise ExportError(f"{fmt}: {name} differs from the eager module")


ROLLOUT_STEPS = 200
"""Steps a recurrent graph is rolled out with its state fed back, against the eager module."""


def verify_against_eager(
    directory: Path,
    formats: list[str],
    graph: InferenceGraph,
    observation_space: gym.Space[Any],
    names: list[str],
) -> None:
    """Check every exported format against the eager graph on batches of 1 and 37 rows.

    A recurrent graph is also rolled out for :data:`ROLLOUT_STEPS` steps from the initial
    state, each format fed back its own state outputs, and compared at every step (the drift
    of fed-back rounding stays within the tolerance).

    Raises:
        ExportError: If any output differs beyond ``rtol=1e-4, atol=1e-5`` (actions of
            discrete spaces must be identical).
    """
    module = graph.module
    discrete = not isinstance(module.action_space, gym.spaces.Box)
    runners = {fmt: _runner(fmt, directory, names) for fmt in formats}
    for batch in (1, 37):
        inputs = (
            *example_inputs(observation_space, batch=batch),
            *example_previous(module, batch),
            *example_state(module, batch),
        )
        with torch.no_grad():
            want = [t.numpy() for t in graph(*inputs)]
        for fmt, run in runners.items():
            _compare(fmt, run(*inputs), want, discrete)
    if not module.is_recurrent:
        return
    observations = example_inputs(observation_space, batch=ROLLOUT_STEPS)
    observations += example_previous(module, ROLLOUT_STEPS, seed=1)  # previous action, reward
    states = {fmt: tuple(module.initial_state(1).values()) for fmt in [*formats, "eager"]}
    for step in range(ROLLOUT_STEPS):
        leaves = tuple(leaf[step : step + 1] for leaf in observations)
        with torch.no_grad():
            want_t = graph(*leaves, *states["eager"])
        want = [t.numpy() for t in want_t]
        states["eager"] = tuple(want_t[2:])
        for fmt, run in runners.items():
            got = run(*leaves, *states[fmt])
            try:
                _compare(fmt, got, want, discrete)
            except ExportError as err:
                raise ExportError(
                    f"{err} at step {step} of a rollout with the state fed back"
                ) from None
            states[fmt] = tuple(torch.from_numpy(np.asarray(part)) for part in got[2:])
