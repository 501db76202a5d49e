"""Artifacts shipped through Ray (``serving.shipping``): fetched once per node, verified there."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from exporters import ArtifactError, load_artifact
from serving.shipping import SCHEME, fetch_artifact, is_shipped, ship_artifacts

pytestmark = pytest.mark.integration


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_a_shipped_artifact_arrives_verified_as_its_version(
    ray_session: Any, cartpole_artifact: Path, tmp_path: Path
) -> None:
    source = shutil.copytree(cartpole_artifact, tmp_path / "source")
    version = load_artifact(source).version
    reference = ship_artifacts({"cartpole": str(source)})["cartpole"]
    assert is_shipped(reference) and not is_shipped(str(source))
    assert reference.startswith(SCHEME) and reference.endswith(f"/{version}")
    shutil.rmtree(source)  # the replicas never read the driver's directory
    cache = tmp_path / "cache"
    fetched = fetch_artifact(reference, cache)
    assert fetched == cache / version and load_artifact(fetched).version == version
    assert _files(fetched) == _files(cartpole_artifact)
    # A second replica on the node reuses the copy; a damaged copy is fetched again.
    assert fetch_artifact(reference, cache) == fetched
    model = next(p for p in fetched.iterdir() if p.suffix == ".onnx")
    model.write_bytes(model.read_bytes()[:-1])
    assert load_artifact(fetch_artifact(reference, cache)).version == version


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (f"{SCHEME}nostore", "expected ray-artifact://STORE/VERSION"),
        (f"{SCHEME}store/../../etc", "expected ray-artifact://STORE/VERSION"),
        (f"{SCHEME}artifacts-gone/0123456789abcdef", "cannot fetch it from its store"),
    ],
)
def test_a_bad_reference_is_a_clear_artifact_error(
    ray_session: Any, reference: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactError, match=message):
        fetch_artifact(reference, tmp_path)


def test_an_artifact_that_does_not_verify_is_never_shipped(
    ray_session: Any, cartpole_artifact: Path, tmp_path: Path
) -> None:
    source = shutil.copytree(cartpole_artifact, tmp_path / "source")
    (source / "extra.txt").write_text("not listed")
    with pytest.raises(ArtifactError, match=r"extra\.txt"):
        ship_artifacts({"cartpole": str(source)})
