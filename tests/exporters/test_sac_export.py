"""SAC artifacts: the manifest, and every backend answering like the eager module.

One tiny SAC policy on ``tests.helpers.envs:AsymmetricBoxEnv`` (asymmetric Box actions) is
trained for one iteration, then its actor head is widened so that the exported graph is tested
where it can go wrong: squashed means deep in ``tanh``'s saturation (where the rescale rounds one
ulp past ``high`` on the ``[-0.2, 0.9]`` dimension unless the graph clips), ordinary means in
between, and log-stds beyond both of the module's clamps (-20 and 2). It is exported once in all
three formats for the whole module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from exporters import ARTIFACT_VERSION, export_checkpoint, load_artifact
from formats.leaves import obs_to_leaves
from serving.runtime import BACKENDS, PolicyRuntime
from tests.helpers.configs import tiny_sac
from tests.helpers.envs import AsymmetricBoxEnv
from training.algorithms.sac.module import LOG_STD_MAX, LOG_STD_MIN
from training.checkpoints import load_module

ENV = "tests.helpers.envs:AsymmetricBoxEnv"
SPREAD = 15.0
"""Std of the widened means and log-stds over observations (the trained head's is about 0.02)."""


def _widen(module: Any, space: gym.Space[Any]) -> None:
    """Give the trained actor a new, seeded head whose outputs span every regime of the graph.

    Each mean and log-std is a random direction in the encoder's feature space, centred and
    scaled over sampled observations to a spread of :data:`SPREAD`: about half the means
    saturate ``tanh`` (``|mean|`` > 9), on both sides; log-stds (centred at -5) cross both clamps.
    """
    rng = np.random.default_rng(0)
    with torch.no_grad():
        features = module.pi_encoder(
            module.encode_inputs([torch.as_tensor(_leaves(space, 2000)[0])])
        )
        centre = features.mean(dim=0)
        weight = torch.as_tensor(
            rng.standard_normal(tuple(module.pi_head.weight.shape)), dtype=torch.float32
        )
        spread = ((features - centre) @ weight.T).std(dim=0)
        weight *= (SPREAD / spread)[:, None]
        offset = torch.tensor([0.0, 0.0, 0.0, -5.0, -5.0, -5.0])
        module.pi_head.weight.copy_(weight)
        module.pi_head.bias.copy_(offset - weight @ centre)


@pytest.fixture(scope="module")
def sac(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The widened SAC policy's checkpoint and its artifact in every format."""
    root = tmp_path_factory.mktemp("sac_export")
    with tiny_sac(ENV).build() as algo:
        algo.train()
        module = algo.get_policy().model
        _widen(module, module.observation_space)
        checkpoint = Path(algo.save(str(root / "checkpoint")).checkpoint.path)
    return checkpoint, export_checkpoint(checkpoint, root / "artifact")


def _leaves(space: gym.Space[Any], rows: int) -> list[np.ndarray]:
    space.seed(11)
    per_obs = [obs_to_leaves(space, space.sample()) for _ in range(rows)]
    return [np.stack(column) for column in zip(*per_obs, strict=True)]


def _eager(checkpoint: Path, leaves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The training module's own inference path (what ``compute_actions(explore=False)`` runs)."""
    module = load_module(checkpoint)[0]
    with torch.no_grad():
        out = module.forward_inference([torch.as_tensor(x) for x in leaves])
    return out["action_dist_inputs"].numpy(), out["actions"].numpy()


def test_the_manifest_names_the_squashed_gaussian(sac: tuple[Path, Path]) -> None:
    _, artifact_dir = sac
    manifest = load_artifact(artifact_dir).manifest
    assert manifest.algorithm == "SAC"
    assert manifest.action_distribution == "squashed_gaussian"
    assert manifest.format_version == ARTIFACT_VERSION == "1.4"
    # A feed-forward manifest has no "state" key: a 1.2 reader (strict) still reads it.
    assert manifest.state is None
    assert "state" not in json.loads((artifact_dir / "manifest.json").read_text())
    assert "action_clipping" in manifest.graph_contains
    assert [(o.name, o.shape, o.dtype) for o in manifest.outputs] == [
        ("action_dist_inputs", ["batch", 6], "float32"),
        ("actions", ["batch", 3], "float32"),
    ]
    assert sorted(manifest.formats) == ["onnx", "torch_export", "torchscript"]
    stored = json.loads((artifact_dir / "manifest.json").read_text())
    assert stored["action_space"]["low"] == AsymmetricBoxEnv.LOW.tolist()


def test_the_widened_policy_covers_saturation_and_both_clamps(sac: tuple[Path, Path]) -> None:
    """What the parity tests below rely on: every regime of the graph appears in 4097 rows."""
    checkpoint, artifact_dir = sac
    dist_inputs, _ = _eager(
        checkpoint, _leaves(load_artifact(artifact_dir).observation_space, 4097)
    )
    mean, log_std = np.split(dist_inputs, 2, axis=-1)
    for d in range(3):
        assert (mean[:, d] > 9).sum() > 50 and (mean[:, d] < -9).sum() > 50, d  # tanh == +-1
        assert (np.abs(mean[:, d]) < 2).sum() > 50, d  # well inside the range
        assert (log_std[:, d] == LOG_STD_MIN).sum() > 50, d
        assert (log_std[:, d] == LOG_STD_MAX).sum() > 50, d
        assert ((log_std[:, d] > LOG_STD_MIN) & (log_std[:, d] < LOG_STD_MAX)).sum() > 50, d


@pytest.mark.parametrize("rows", [1, 37, 4097])  # 4097: beyond the graph's batch, split
def test_every_backend_answers_like_the_eager_module(sac: tuple[Path, Path], rows: int) -> None:
    checkpoint, artifact_dir = sac
    artifact = load_artifact(artifact_dir)
    space = artifact.action_space
    assert isinstance(space, gym.spaces.Box)
    leaves = _leaves(artifact.observation_space, rows)
    dist_ref, actions_ref = _eager(checkpoint, leaves)
    for backend in BACKENDS:
        runtime = PolicyRuntime(artifact, backend=backend, allow_torchscript=True)
        dist_inputs, actions, _ = runtime.run_graph(leaves)
        assert dist_inputs.shape == (rows, 6) and actions.shape == (rows, 3), backend
        assert actions.dtype == np.float32, backend
        np.testing.assert_allclose(dist_inputs, dist_ref, rtol=1e-4, atol=1e-5, err_msg=backend)
        np.testing.assert_allclose(actions, actions_ref, rtol=0, atol=1e-5, err_msg=backend)
        assert np.all(actions >= space.low) and np.all(actions <= space.high), backend
        # The deterministic action is the squashed mean, rescaled into the asymmetric bounds.
        squashed = space.low + (np.tanh(dist_inputs[:, :3]) + 1) * (space.high - space.low) / 2
        np.testing.assert_allclose(actions, squashed, rtol=0, atol=1e-5, err_msg=backend)


def test_saturated_means_give_the_bounds_exactly(sac: tuple[Path, Path]) -> None:
    """A saturated ``tanh`` gives ``high`` / ``low`` exactly, never an ulp past them.

    On ``[-0.2, 0.9]`` the rescale ``low + 2 * ((high - low) / 2)`` rounds to ``0.9 + 6e-8`` in
    float32: only the graph's clip keeps that action inside the space.
    """
    _, artifact_dir = sac
    artifact = load_artifact(artifact_dir)
    space = artifact.action_space
    assert isinstance(space, gym.spaces.Box)
    leaves = _leaves(artifact.observation_space, 512)
    for backend in BACKENDS:
        runtime = PolicyRuntime(artifact, backend=backend, allow_torchscript=True)
        dist_inputs, actions, _ = runtime.run_graph(leaves)
        mean = dist_inputs[:, :3]
        for d in range(3):
            high_rows, low_rows = mean[:, d] > 12, mean[:, d] < -12
            assert high_rows.any() and low_rows.any(), (backend, d)
            assert np.all(actions[high_rows, d] == space.high[d]), (backend, d)
            assert np.all(actions[low_rows, d] == space.low[d]), (backend, d)
        assert all(space.contains(a) for a in actions), backend
