"""Exported artifacts: parity with the training-time policy, dynamic batch, safe loading."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import onnx
import pytest
import torch

from exporters import (
    ARTIFACT_VERSION,
    ArtifactError,
    ArtifactVersionError,
    ExportError,
    export_checkpoint,
    load_artifact,
)
from exporters.verify import load_torch_format
from formats.leaves import obs_to_leaves
from tests.exporters.tamper import rehash
from tests.helpers.policies import (
    CONTINUOUS,
    DISTRIBUTIONS,
    FILTERED,
    ITERATIONS,
    POLICY_NAMES,
    TinyPolicies,
)
from training import Algorithm


@pytest.fixture(scope="module", params=POLICY_NAMES)
def exported(request: pytest.FixtureRequest, tiny_policies: TinyPolicies) -> tuple[str, Path, Path]:
    """Each shared policy's last checkpoint and its artifact in every format."""
    name: str = request.param
    return name, tiny_policies.checkpoint(name), tiny_policies.artifact(name)


def _observations(space: gym.Space[Any], n: int) -> list[Any]:
    space.seed(123)
    return [space.sample() for _ in range(n)]


def _leaves(space: gym.Space[Any], observations: list[Any]) -> list[np.ndarray]:
    per_obs = [obs_to_leaves(space, o) for o in observations]
    return [np.stack(column) for column in zip(*per_obs, strict=True)]


def test_artifact_matches_compute_single_action_on_1000_observations(
    exported: tuple[str, Path, Path],
) -> None:
    _, checkpoint, artifact_dir = exported
    artifact = load_artifact(artifact_dir)
    with Algorithm.from_checkpoint(checkpoint) as algo:
        observations = _observations(artifact.observation_space, 1000)
        expected = np.stack([algo.compute_single_action(o, explore=False) for o in observations])
        leaves = _leaves(artifact.observation_space, observations)
        dist_inputs, actions = artifact.onnx_policy().run(leaves)
        if isinstance(artifact.action_space, gym.spaces.Box):
            np.testing.assert_allclose(actions, expected, atol=1e-5)
            assert artifact.action_space.contains(actions[0])
        else:
            np.testing.assert_array_equal(actions, expected)
        # Distribution inputs agree across eager torch, onnxruntime, TorchScript, torch.export.
        module = algo.get_policy().model
        tensors = [torch.as_tensor(x) for x in leaves]
        with torch.no_grad():
            eager = module.forward_inference(tensors)["action_dist_inputs"].numpy()
        np.testing.assert_allclose(dist_inputs, eager, rtol=1e-4, atol=1e-5)
        for fmt in ("torchscript", "torch_export"):
            model = load_torch_format(fmt, artifact.file(fmt))
            with torch.no_grad():
                dist_t, actions_t = model(*tensors)
            np.testing.assert_allclose(dist_t.numpy(), eager, rtol=1e-4, atol=1e-5)
            if isinstance(artifact.action_space, gym.spaces.Box):
                np.testing.assert_allclose(actions_t.numpy(), expected, atol=1e-5)
            else:
                np.testing.assert_array_equal(actions_t.numpy(), expected)
    onnx.checker.check_model(str(artifact.file("onnx")), full_check=True)


def test_manifest_describes_the_whole_graph(exported: tuple[str, Path, Path]) -> None:
    name, checkpoint, artifact_dir = exported
    manifest = load_artifact(artifact_dir).manifest
    assert manifest.source_checkpoint == str(checkpoint.resolve())
    assert manifest.source_iteration == ITERATIONS == 2
    assert set(manifest.formats) == {"onnx", "torchscript", "torch_export"}
    assert manifest.formats["torchscript"].legacy
    assert "preprocessing" in manifest.graph_contains
    assert ("observation_filter" in manifest.graph_contains) == (name in FILTERED)
    assert ("action_clipping" in manifest.graph_contains) == (name in CONTINUOUS)
    assert manifest.action_distribution == DISTRIBUTIONS[name]
    files = json.loads((artifact_dir / "manifest.json").read_text())["files"]
    assert set(files) == {"model.onnx", "model.ts", "model.pt2"}


def test_every_format_accepts_batches_from_1_to_4096(exported: tuple[str, Path, Path]) -> None:
    _, _, artifact_dir = exported
    artifact = load_artifact(artifact_dir)
    policy = artifact.onnx_policy()
    exported_program = load_torch_format("torch_export", artifact.file("torch_export"))
    scripted = load_torch_format("torchscript", artifact.file("torchscript"))
    for batch in (1, 4096):
        leaves = _leaves(
            artifact.observation_space, _observations(artifact.observation_space, batch)
        )
        dist, actions = policy.run(leaves)
        assert dist.shape[0] == actions.shape[0] == batch
        tensors = [torch.as_tensor(x) for x in leaves]
        for model in (exported_program, scripted):
            with torch.no_grad():
                assert model(*tensors)[1].shape[0] == batch


# ----------------------------------------------------------------- export edges
@pytest.fixture(scope="module")
def small(tiny_policies: TinyPolicies) -> tuple[Path, Path]:
    """The shared CartPole policy's checkpoint and its ONNX-only artifact."""
    return tiny_policies.checkpoint("cartpole"), tiny_policies.artifact("cartpole", ["onnx"])


def test_export_never_creates_the_env(
    small: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_env(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("export created the env")

    monkeypatch.setattr("training.envs.make_env_creator", no_env)
    monkeypatch.setattr("training.env_runner.make_env_creator", no_env)
    monkeypatch.setattr(gym, "make", no_env)
    out = export_checkpoint(small[0], tmp_path / "art", formats=["onnx"])
    assert load_artifact(out).manifest.formats.keys() == {"onnx"}


def test_the_version_is_content_derived(small: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, onnx_only = small
    again = export_checkpoint(checkpoint, tmp_path / "again", formats=["onnx"])
    assert load_artifact(again).version == load_artifact(onnx_only).version
    every = export_checkpoint(checkpoint, tmp_path / "every")
    assert load_artifact(every).version != load_artifact(onnx_only).version  # formats differ


def test_export_rejects_unknown_formats(small: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown"):
        export_checkpoint(small[0], tmp_path / "x", formats=["tflite"])
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------- loader rejections
@pytest.fixture()
def artifact_copy(small: tuple[Path, Path], tmp_path: Path) -> Path:
    target = tmp_path / "artifact"
    shutil.copytree(small[1], target)
    return target


def _manifest(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "manifest.json").read_text())
    return data


def _write_manifest(path: Path, data: dict[str, Any]) -> None:
    (path / "manifest.json").write_text(json.dumps(data))


def test_tampered_onnx_is_rejected_naming_the_file(artifact_copy: Path) -> None:
    model = artifact_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.onnx.*sha256"):
        load_artifact(artifact_copy)


def test_truncated_and_missing_files_are_rejected(artifact_copy: Path) -> None:
    model = artifact_copy / "model.onnx"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"model\.onnx"):
        load_artifact(artifact_copy)
    model.unlink()
    with pytest.raises(ArtifactError, match=r"model\.onnx"):
        load_artifact(artifact_copy)


@pytest.mark.parametrize("entry", ["../outside.onnx", "/etc/passwd", "sub/../../x"])
def test_entries_outside_the_directory_are_rejected(artifact_copy: Path, entry: str) -> None:
    data = _manifest(artifact_copy)
    data["files"][entry] = {"sha256": "0" * 64, "size": 1}
    _write_manifest(artifact_copy, data)
    with pytest.raises(ArtifactError):
        load_artifact(artifact_copy)


def test_symlinked_model_is_rejected(artifact_copy: Path, tmp_path: Path) -> None:
    model = artifact_copy / "model.onnx"
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(model, outside)
    os.symlink(outside, model)
    with pytest.raises(ArtifactError, match=r"link"):
        load_artifact(artifact_copy)


def test_future_format_version_names_both_versions(artifact_copy: Path) -> None:
    data = _manifest(artifact_copy)
    data["format_version"] = "7.0"
    _write_manifest(artifact_copy, data)
    with pytest.raises(ArtifactVersionError, match=rf"7\.0.*{re.escape(ARTIFACT_VERSION)}"):
        load_artifact(artifact_copy)


def test_manifest_naming_an_unlisted_file_is_rejected(artifact_copy: Path) -> None:
    data = _manifest(artifact_copy)
    data["formats"]["torchscript"] = {
        "file": "model.ts",
        "opset": None,
        "legacy": True,
        "note": None,
    }
    _write_manifest(artifact_copy, data)
    with pytest.raises(ArtifactError, match=r"model\.ts"):
        load_artifact(artifact_copy)


def test_onnx_with_external_data_is_rejected(artifact_copy: Path) -> None:
    from onnx.external_data_helper import convert_model_to_external_data

    model_path = artifact_copy / "model.onnx"
    model = onnx.load(str(model_path))
    convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0
    )
    onnx.save_model(model, str(model_path))
    # Hashes and version rewritten to match: only the external-data check is left to refuse it.
    rehash(artifact_copy, "model.onnx", "weights.bin", version=True)
    with pytest.raises(ArtifactError, match="external data"):
        load_artifact(artifact_copy)


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"manifest\.json is missing"):
        load_artifact(tmp_path)


def test_the_errors_have_one_home() -> None:
    import exporters.artifact
    import exporters.errors
    import exporters.export
    from formats.errors import RlserveError

    assert ExportError is exporters.export.ExportError is exporters.errors.ExportError
    assert ArtifactError is exporters.artifact.ArtifactError is exporters.errors.ArtifactError
    assert ArtifactVersionError is exporters.errors.ArtifactVersionError
    assert issubclass(ExportError, RlserveError) and issubclass(ExportError, ValueError)
    assert issubclass(ArtifactVersionError, ArtifactError)
    assert issubclass(ArtifactError, RlserveError)


def test_verify_and_export_do_not_import_each_other() -> None:
    import ast

    import exporters.verify

    tree = ast.parse(Path(exporters.verify.__file__).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "exporters.export" not in imported
