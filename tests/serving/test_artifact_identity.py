"""Artifact identity: the served version is the content's; changed content never passes as old.

Real files and real onnxruntime, in-process (no Ray): each test tampers with its own copy of a
session artifact (``tests/exporters/tamper.py``), then loads it through
:func:`exporters.load_artifact` or serves it through :class:`serving.PolicyRegistry` and the
HTTP app. Choices asserted here (see ``exporters/artifact.py``): a manifest whose stored
``version`` is not the content's is refused; one rewritten consistently loads under the *new*
version; anything in the directory the manifest does not list, and any symbolic link, is
refused by name.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from exporters import ArtifactError, export_checkpoint, load_artifact
from exporters.manifest import Manifest, content_version
from serving import PolicyRegistry, ServingSettings, create_app, wire
from tests.exporters.tamper import (
    change_onnx_weight,
    copy_artifact,
    flip_byte,
    read_manifest,
    rehash,
    write_manifest,
)
from tests.helpers.policies import TinyPolicies

OBS = [0.01, -0.02, 0.03, 0.04]


@pytest.fixture()
def copy(cartpole_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the shared ONNX-only CartPole artifact."""
    return copy_artifact(cartpole_artifact, tmp_path / "artifact")


def _stored_version(artifact_dir: Path) -> str:
    return str(read_manifest(artifact_dir)["version"])


def _recomputed(artifact_dir: Path) -> str:
    data = read_manifest(artifact_dir)
    files = data.pop("files")
    return content_version(Manifest.model_validate(data), files)


# ----------------------------------------------------------------- the version is the content's
def test_the_version_is_recomputed_from_the_verified_content(cartpole_artifact: Path) -> None:
    artifact = load_artifact(cartpole_artifact)
    assert artifact.version == _recomputed(cartpole_artifact) == _stored_version(cartpole_artifact)
    assert len(artifact.version) == 16 and int(artifact.version, 16) >= 0


def test_exporting_the_same_checkpoint_again_gives_the_same_version(
    cartpole_checkpoint: Path, cartpole_artifact: Path, tmp_path: Path
) -> None:
    again = export_checkpoint(cartpole_checkpoint, tmp_path / "again", formats=["onnx"])
    assert (again / "model.onnx").read_bytes() == (cartpole_artifact / "model.onnx").read_bytes()
    assert load_artifact(again).version == load_artifact(cartpole_artifact).version
    # torch.export archives are byte-identical too (TorchScript's are only in a fresh process:
    # torch renames the classes it already traced in this one).
    both = [
        export_checkpoint(cartpole_checkpoint, tmp_path / f"both{i}", ["onnx", "torch_export"])
        for i in range(2)
    ]
    assert load_artifact(both[0]).version == load_artifact(both[1]).version
    assert load_artifact(both[0]).version != load_artifact(again).version  # formats differ


def _change_onnx(path: Path, change: str) -> None:
    if change == "flip":
        change_onnx_weight(path)
        return
    import onnx

    model = onnx.load(str(path))
    model.doc_string += " (edited)"
    onnx.save_model(model, str(path))


def test_any_change_to_any_listed_file_changes_the_version(
    tiny_policies: TinyPolicies, tmp_path: Path
) -> None:
    source = tiny_policies.artifact("cartpole")  # every format: model.onnx, model.ts, model.pt2
    original = load_artifact(source).version
    listed = sorted(read_manifest(source)["files"])
    assert listed == ["model.onnx", "model.pt2", "model.ts"]
    versions = {original}
    for i, name in enumerate(listed):
        for change in ("flip", "append"):
            artifact_dir = copy_artifact(source, tmp_path / f"{i}-{change}")
            if name == "model.onnx":  # kept a valid model: the loader parses it
                _change_onnx(artifact_dir / name, change)
            elif change == "flip":
                flip_byte(artifact_dir / name)
            else:
                with open(artifact_dir / name, "ab") as fh:
                    fh.write(b"\0")
            new = rehash(artifact_dir, name, version=True)
            assert load_artifact(artifact_dir).version == new
            versions.add(new)
    assert len(versions) == 1 + 2 * len(listed)  # every change its own version


def test_the_manifest_core_is_part_of_the_version_and_provenance_is_not(copy: Path) -> None:
    original = load_artifact(copy).version
    data = read_manifest(copy)
    write_manifest(copy, {**data, "max_batch_size": 8})  # changes what clients may send
    with pytest.raises(ArtifactError, match=r"manifest\.json version is '[0-9a-f]{16}', expected"):
        load_artifact(copy)
    provenance = {
        "policy_name": "renamed",
        "source_checkpoint": "/elsewhere",
        "source_iteration": 9,
    }
    write_manifest(copy, {**data, **provenance})  # where it came from, not what it computes
    assert load_artifact(copy).version == original


# ----------------------------------------------------------------- served under that version
class _Client:
    def __init__(self, registry: PolicyRegistry) -> None:
        self.loop = asyncio.new_event_loop()
        app = create_app(registry, ServingSettings(max_rows=64, max_body_bytes=64 * 1024))
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://rlserve.test"
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def versions(self) -> set[str]:
        """The version every route reports for ``cartpole``."""
        single = self.request("POST", wire.action_path("cartpole"), json={"observation": OBS})
        batch = self.request("POST", wire.actions_path("cartpole"), json={"observations": [OBS]})
        npy = self.request(
            "POST",
            wire.actions_path("cartpole"),
            json={"observations": [OBS]},
            headers={"accept": wire.NPY},
        )
        info = self.request("GET", wire.policy_path("cartpole"))
        for answer in (single, batch, npy, info):
            assert answer.status_code == 200, answer.text
        assert np.load(io.BytesIO(npy.content), allow_pickle=False).shape == (1,)
        return {
            single.json()["version"],
            batch.json()["version"],
            npy.headers[wire.VERSION_HEADER],
            info.json()["version"],
        }

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


def test_the_served_version_is_the_contents_and_follows_a_rewritten_model(
    copy: Path, tmp_path: Path
) -> None:
    original = load_artifact(copy).version
    registry = PolicyRegistry.from_paths({"cartpole": copy})
    client = _Client(registry)
    try:
        assert client.versions() == {original}
        # A model changed and its hash rewritten, the version left alone: refused on reload,
        # and the verified one keeps answering under its own version.
        modified = copy_artifact(copy, tmp_path / "modified")
        change_onnx_weight(modified / "model.onnx")
        new = rehash(modified, "model.onnx")
        assert new != original == _stored_version(modified)
        failures = registry.reload({"cartpole": modified})
        assert f"version is {original!r}, expected {new!r}" in failures["cartpole"]
        assert client.versions() == {original}
        info = client.request("GET", wire.policy_path("cartpole")).json()
        assert "version" in info["last_reload_error"]
        # The version rewritten too: it is served, under the new version only.
        rehash(modified, version=True)
        assert registry.reload({"cartpole": modified}) == {}
        assert client.versions() == {new}
    finally:
        client.close()


# ----------------------------------------------------------------- the tampering matrix
def _unlisted_file(d: Path) -> Path:
    (d / "notes.txt").write_text("added after export")
    return d


def _unlisted_dir(d: Path) -> Path:
    (d / "extra").mkdir()
    (d / "extra" / "weights.bin").write_bytes(b"\0" * 16)
    return d


def _symlinked_model(d: Path) -> Path:
    outside = d.parent / "outside.onnx"
    (d / "model.onnx").rename(outside)  # same bytes, same hash: only the link is wrong
    (d / "model.onnx").symlink_to(outside)
    return d


def _unlisted_link(d: Path) -> Path:
    (d / "model.onnx.bak").symlink_to(d / "model.onnx")
    return d


def _linked_subdir(d: Path) -> Path:
    (d / "data").symlink_to(d.parent, target_is_directory=True)
    return d


def _linked_artifact_dir(d: Path) -> Path:
    link = d.parent / "current"
    link.symlink_to(d, target_is_directory=True)
    return link


def _rehashed_model(d: Path) -> Path:
    change_onnx_weight(d / "model.onnx")
    rehash(d, "model.onnx")  # the version is left as exported
    return d


def _rehashed_model_and_version(d: Path) -> Path:
    change_onnx_weight(d / "model.onnx")
    rehash(d, "model.onnx", version=True)
    return d


REFUSED: dict[str, tuple[Callable[[Path], Path], str]] = {
    "model-rehashed": (_rehashed_model, r"manifest\.json version is '[0-9a-f]{16}', expected"),
    "unlisted-file": (_unlisted_file, r"file 'notes\.txt' is not listed in manifest\.json"),
    "unlisted-dir": (_unlisted_dir, r"directory 'extra/' holds no file manifest\.json lists"),
    "symlinked-model": (_symlinked_model, r"'model\.onnx' has a symbolic link"),
    "unlisted-link": (_unlisted_link, r"'model\.onnx\.bak' is a symbolic link"),
    "linked-subdir": (_linked_subdir, r"'data' is a symbolic link"),
    "linked-artifact-dir": (_linked_artifact_dir, r"current: is a symbolic link"),
}


@pytest.mark.integration
@pytest.mark.reliability
@pytest.mark.parametrize("case", [*REFUSED, "model-and-version-rehashed"])
def test_tampered_artifacts_are_refused_or_served_as_new_content(
    case: str, cartpole_artifact: Path, tmp_path: Path
) -> None:
    """Every tampering is refused by name before a replica sees it, or gets a new version."""
    original = load_artifact(cartpole_artifact).version
    artifact_dir = copy_artifact(cartpole_artifact, tmp_path / "artifact")
    if case == "model-and-version-rehashed":
        tampered = _rehashed_model_and_version(artifact_dir)
        registry = PolicyRegistry.from_paths({"cartpole": tampered})
        runtime = registry.get("cartpole")
        assert runtime is not None and runtime.version == _recomputed(tampered) != original
        assert registry.describe("cartpole", max_rows=1)["version"] == runtime.version
        return
    tamper, message = REFUSED[case]
    tampered = tamper(artifact_dir)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(tampered)
    with pytest.raises(ArtifactError, match=message):
        PolicyRegistry.from_paths({"cartpole": tampered})
    assert os.path.lexists(tampered)  # refused, not cleaned away
