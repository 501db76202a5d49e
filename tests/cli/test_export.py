"""``rlserve export`` through the installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exporters import load_artifact

pytestmark = pytest.mark.integration

RLSERVE = shutil.which("rlserve", path=str(Path(sys.executable).parent)) or "rlserve"


@pytest.fixture()
def checkpoint(cartpole_checkpoint: Path) -> Path:
    return cartpole_checkpoint


def test_export_writes_a_verified_artifact(checkpoint: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            RLSERVE,
            "export",
            str(checkpoint),
            "--out",
            str(tmp_path / "art"),
            "--format",
            "onnx",
            "--name",
            "cartpole",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    artifact = load_artifact(tmp_path / "art")
    assert artifact.manifest.policy_name == "cartpole"
    assert f"version {artifact.version}" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tflite"], "unknown ['tflite']"),
        (["--max-batch-size", "2"], "max_batch_size must be >= 8"),
    ],
)
def test_export_errors_are_one_line_exit_code_2(
    checkpoint: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = subprocess.run(
        [RLSERVE, "export", str(checkpoint), "--out", str(tmp_path / "art"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_export_of_a_tampered_checkpoint_fails_cleanly(checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    weights = broken / "module.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    out = subprocess.run(
        [RLSERVE, "export", str(broken), "--out", str(tmp_path / "art")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2
    assert "module.safetensors" in out.stderr
    assert not (tmp_path / "art").exists()
