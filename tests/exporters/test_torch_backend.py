"""The torch backend: torch.export programs served without unpickling, TorchScript opt-in."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import httpx
import numpy as np
import pytest
import torch

from exporters import ArtifactError, export_checkpoint, load_artifact
from exporters.torch_policy import TorchPolicy, check_pt2_archive
from formats.leaves import obs_to_leaves
from serving import PolicyRegistry, create_app
from serving.runtime import PolicyRuntime
from tests.exporters.tamper import rehash
from tests.helpers.policies import TinyPolicies

FORMATS = ["onnx", "torch_export", "torchscript"]


@pytest.fixture(scope="module")
def all_formats(cartpole_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("all_formats") / "artifact"
    return export_checkpoint(cartpole_checkpoint, out, FORMATS)


@pytest.fixture(scope="module")
def pendulum(tiny_policies: TinyPolicies) -> Path:
    """The shared Pendulum policy (MeanStdFilter) exported for ONNX and torch.export."""
    return tiny_policies.artifact("pendulum", ["onnx", "torch_export"])


def _leaves(space: gym.Space[Any], n: int) -> list[np.ndarray]:
    space.seed(7)
    rows = [obs_to_leaves(space, space.sample()) for _ in range(n)]
    return [np.stack(column) for column in zip(*rows, strict=True)]


@pytest.mark.parametrize("rows", [1, 37, 4097])  # 4097: beyond the graph's batch, split
def test_torch_export_answers_like_onnxruntime(all_formats: Path, rows: int) -> None:
    onnx_rt = PolicyRuntime.from_path(all_formats)
    torch_rt = PolicyRuntime.from_path(all_formats, backend="torch_export")
    assert isinstance(torch_rt.session, TorchPolicy)
    leaves = _leaves(onnx_rt.observation_space, rows)
    dist_o, act_o, _ = onnx_rt.run_graph(leaves)
    dist_t, act_t, _ = torch_rt.run_graph(leaves)
    np.testing.assert_array_equal(act_t, act_o)
    assert act_t.dtype == act_o.dtype and act_t.shape == (rows,)
    np.testing.assert_allclose(dist_t, dist_o, rtol=1e-4, atol=1e-5)


def test_continuous_actions_and_seeded_sampling_agree_across_backends(pendulum: Path) -> None:
    onnx_rt = PolicyRuntime.from_path(pendulum)
    torch_rt = PolicyRuntime.from_path(pendulum, backend="torch_export")
    leaves = _leaves(onnx_rt.observation_space, 64)
    greedy_o = onnx_rt.compute(leaves)
    greedy_t = torch_rt.compute(leaves)
    np.testing.assert_allclose(greedy_t.actions, greedy_o.actions, atol=1e-5)
    sampled_o = onnx_rt.compute(leaves, explore=True, seed=3)
    sampled_t = torch_rt.compute(leaves, explore=True, seed=3)
    np.testing.assert_allclose(sampled_t.actions, sampled_o.actions, atol=1e-4)
    assert not np.allclose(sampled_t.actions, greedy_t.actions)
    space = onnx_rt.action_space
    assert isinstance(space, gym.spaces.Box)
    assert np.all(sampled_t.actions >= space.low) and np.all(sampled_t.actions <= space.high)


def test_torchscript_is_refused_unless_allowed(all_formats: Path) -> None:
    with pytest.raises(ArtifactError, match="TorchScript archives are unpickled"):
        PolicyRuntime.from_path(all_formats, backend="torchscript")
    allowed = PolicyRuntime.from_path(all_formats, backend="torchscript", allow_torchscript=True)
    leaves = _leaves(allowed.observation_space, 16)
    np.testing.assert_array_equal(
        allowed.run_graph(leaves)[1], PolicyRuntime.from_path(all_formats).run_graph(leaves)[1]
    )


def test_a_missing_format_is_named(cartpole_artifact: Path) -> None:  # ONNX only
    with pytest.raises(ArtifactError, match="no 'torch_export' format; it has \\['onnx'\\]"):
        PolicyRuntime.from_path(cartpole_artifact, backend="torch_export")


def test_the_exported_archive_holds_nothing_torch_would_unpickle(all_formats: Path) -> None:
    path = load_artifact(all_formats).file("torch_export")
    check_pt2_archive(path)
    with zipfile.ZipFile(path) as archive:
        sample_inputs = [i for i in archive.infolist() if "/data/sample_inputs/" in i.filename]
    assert [i.file_size for i in sample_inputs] == [0]


def _rewrite(source: Path, target: Path, change: dict[str, bytes | None]) -> None:
    """Copy a zip archive, replacing (bytes), removing (None) or adding records."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        root = old.namelist()[0].split("/", 1)[0]
        for info in old.infolist():
            record = info.filename.split("/", 1)[1]
            if record in change:
                continue
            new.writestr(info, old.read(info))
        for record, data in change.items():
            if data is not None:
                new.writestr(f"{root}/{record}", data)


def _config(path: Path, record: str) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        loaded: dict[str, Any] = json.loads(archive.read(f"{root}/{record}"))
        return loaded


WEIGHTS_CONFIG = "data/weights/model_weights_config.json"


def _pickled_weight(path: Path) -> dict[str, bytes | None]:
    config = _config(path, WEIGHTS_CONFIG)
    next(iter(config["config"].values()))["use_pickle"] = True
    return {WEIGHTS_CONFIG: json.dumps(config).encode()}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: {"data/sample_inputs/model.pt": b"PK..."}, "pickled sample inputs"),
        (_pickled_weight, "is a pickled payload"),
        (lambda p: {"data/weights/model.pt": b"legacy"}, "holds a pickle"),
        (lambda p: {"data/aotinductor/model/x.so": b"\x7fELF"}, "unexpected record"),
        (lambda p: {WEIGHTS_CONFIG: b'{"config": [1, 2]}'}, "is not a payload config"),
    ],
    ids=["sample-inputs", "pickled-weight", "legacy-weights", "compiled-code", "bad-config"],
)
def test_archives_that_would_unpickle_are_refused(
    all_formats: Path, tmp_path: Path, change: Any, message: str
) -> None:
    source = load_artifact(all_formats).file("torch_export")
    bad = tmp_path / "model.pt2"
    _rewrite(source, bad, change(source))
    with pytest.raises(ArtifactError, match=message):
        check_pt2_archive(bad)


def test_a_plain_torch_export_save_is_refused(tmp_path: Path) -> None:
    """torch.export.save keeps pickled sample inputs by default: such files are not served."""
    program = torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
    torch.export.save(program, str(tmp_path / "model.pt2"))
    with pytest.raises(ArtifactError, match="pickled sample inputs"):
        check_pt2_archive(tmp_path / "model.pt2")
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="not a pt2"):
        check_pt2_archive(tmp_path / "junk.pt2")


class _Marker:
    """Unpickling this creates a directory: proof that a loader ran a pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.path),))


def test_a_rehashed_hostile_archive_runs_no_pickle(all_formats: Path, tmp_path: Path) -> None:
    """Hashes only prove the files match the manifest; the archive check stops the pickle.

    The attacker rewrites the file's hash and the version: it loads, under a new version.
    """
    artifact_dir = tmp_path / "artifact"
    shutil.copytree(all_formats, artifact_dir)
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"x": _Marker(marker)}, buffer)  # what torch.load would run
    payload = buffer.getvalue()
    target = artifact_dir / "model.pt2"
    _rewrite(all_formats / "model.pt2", target, {"data/sample_inputs/model.pt": payload})
    version = rehash(artifact_dir, "model.pt2", version=True)
    artifact = load_artifact(artifact_dir)  # consistent hashes: verification passes
    assert artifact.version == version != load_artifact(all_formats).version
    with pytest.raises(ArtifactError, match="pickled sample inputs"):
        TorchPolicy(artifact)
    assert not marker.exists()
    # The threat is real: torch's own loader runs that pickle (its weights_only=False fallback).
    with contextlib.suppress(Exception):  # whatever happens after the pickle ran
        torch.export.load(str(target))
    assert marker.exists()


def test_the_http_api_serves_the_torch_backend(all_formats: Path) -> None:
    asyncio.run(_http_api_serves_the_torch_backend(all_formats))


async def _http_api_serves_the_torch_backend(all_formats: Path) -> None:
    torch_app = create_app(PolicyRegistry.from_paths({"p": all_formats}, backend="torch_export"))
    onnx_app = create_app(PolicyRegistry.from_paths({"p": all_formats}))
    space = load_artifact(all_formats).observation_space
    space.seed(1)
    observations = [space.sample().tolist() for _ in range(32)]
    answers = []
    for app in (torch_app, onnx_app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            described = (await client.get("/v1/policies/p")).json()
            reply = await client.post(
                "/v1/policies/p/compute_actions", json={"observations": observations}
            )
            assert reply.status_code == 200, reply.text
            answers.append((described["backend"], reply.json()["actions"]))
    (torch_backend, torch_actions), (onnx_backend, onnx_actions) = answers
    assert (torch_backend, onnx_backend) == ("torch_export", "onnx")
    assert torch_actions == onnx_actions


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_export_on_cuda_answers_like_cpu(all_formats: Path) -> None:
    cpu = PolicyRuntime.from_path(all_formats, backend="torch_export")
    gpu = PolicyRuntime.from_path(all_formats, backend="torch_export", device="cuda")
    leaves = _leaves(cpu.observation_space, 1024)
    np.testing.assert_array_equal(gpu.run_graph(leaves)[1], cpu.run_graph(leaves)[1])


def test_torch_threads_change_only_when_asked(all_formats: Path) -> None:
    """torch's thread count is process-wide: a replica sizes it, a library caller keeps its own."""
    before = torch.get_num_threads()
    try:
        PolicyRuntime.from_path(all_formats, backend="torch_export")
        assert torch.get_num_threads() == before
        PolicyRuntime.from_path(all_formats, backend="torch_export", intra_op_num_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
