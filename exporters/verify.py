"""Parity checks of exported graphs against the eager module (used before publishing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from exporters.errors import ExportError
from exporters.graph import InferenceGraph, example_inputs
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


def _run(
    fmt: str, directory: Path, leaves: tuple[torch.Tensor, ...], names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    path = directory / FORMAT_FILES[fmt]
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        dist, actions = session.run(
            None, {n: x.numpy() for n, x in zip(names, leaves, strict=True)}
        )
        return dist, actions
    model = load_torch_format(fmt, path)
    with torch.no_grad():
        dist_t, actions_t = model(*leaves)
    return dist_t.numpy(), actions_t.numpy()


def verify_against_eager(
    directory: Path,
    formats: list[str],
    graph: InferenceGraph,
    observation_space: gym.Space[Any],
    names: list[str],
) -> None:
    """Check every exported format against the eager graph on batches of 1 and 37 rows.

    Raises:
        ExportError: If any output differs beyond ``rtol=1e-4, atol=1e-5`` (actions of
            discrete spaces must be identical).
    """
    discrete = not isinstance(graph.module.action_space, gym.spaces.Box)
    for batch in (1, 37):
        leaves = example_inputs(observation_space, batch=batch)
        with torch.no_grad():
            dist_ref, actions_ref = (t.numpy() for t in graph(*leaves))
        for fmt in formats:
            dist, actions = _run(fmt, directory, leaves, names)
            if not np.allclose(dist, dist_ref, rtol=1e-4, atol=1e-5):
                raise ExportError(f"{fmt}: action_dist_inputs differ from the eager module")
            same = (
                np.array_equal(actions, actions_ref)
                if discrete
                else np.allclose(actions, actions_ref, atol=1e-5)
            )
            if not same or actions.dtype != actions_ref.dtype:
                raise ExportError(f"{fmt}: actions differ from the eager module")
