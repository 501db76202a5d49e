"""``rlserve train --algo IMPALA`` with a remote runner, then export and evaluate its checkpoint.

One tiny asynchronous run through the console script (a module fixture): it must write a
checkpoint that loads as IMPALA and report the asynchronous figures, and ``rlserve export``
must turn it into an artifact that plays the same episodes as the checkpoint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlserve.cli import app
from training import Algorithm

pytestmark = pytest.mark.integration

RLSERVE = shutil.which("rlserve", path=str(Path(sys.executable).parent)) or "rlserve"
TINY = ["--set", "num_env_runners=1", "--set", "rollout_fragment_length=16",
        "--set", "train_batch_size=64", "--set", "min_sample_timesteps_per_iteration=512",
        "--set", "num_cpus_per_env_runner=0.5"]  # fmt: skip
runner = CliRunner()


@pytest.fixture(scope="module")
def impala_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``rlserve train --algo impala`` for 2 tiny iterations: (run dir, stdout)."""
    root = tmp_path_factory.mktemp("impala_cli")
    out = subprocess.run(
        [RLSERVE, "train", "--algo", "impala", "--env", "CartPole-v1", "--stop-iters", "2",
         *TINY, "--seed", "2", "--checkpoint-dir", str(root / "run")],
        capture_output=True, text=True, cwd=root, timeout=180, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "run", out.stdout


def test_train_impala_writes_a_checkpoint_and_the_asynchronous_figures(
    impala_run: tuple[Path, str],
) -> None:
    run_dir, stdout = impala_run
    assert "training IMPALA on CartPole-v1" in stdout
    with Algorithm.from_checkpoint(run_dir / "checkpoint_final", num_env_runners=0) as algo:
        assert algo.name == "IMPALA"
        assert algo.iteration == 2
        assert algo.config.seed == 2 and algo.config.train_batch_size == 64
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert last["learners"]["default_policy"]["num_updates"] >= 1
    assert last["weights_version"] >= 8  # at least 1024 env steps in 64-row batches, in all
    assert "policy_lag_mean" in last["learners"]["default_policy"]
    assert last["num_sample_requests_in_flight"] >= 1
    header = (run_dir / "progress.csv").read_text().splitlines()[0].split(",")
    assert "learners/default_policy/policy_lag_mean" in header
    assert "driver_cpu_ms_per_fragment" in header


def test_the_exported_impala_artifact_evaluates_as_the_checkpoint(
    impala_run: tuple[Path, str], tmp_path: Path
) -> None:
    checkpoint = impala_run[0] / "checkpoint_final"
    artifact = tmp_path / "artifact"
    exported = runner.invoke(
        app, ["export", str(checkpoint), "--out", str(artifact), "--format", "onnx"]
    )
    assert exported.exit_code == 0, exported.stderr
    assert "exported IMPALA policy" in exported.stdout
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert (manifest["algorithm"], manifest["action_distribution"]) == ("IMPALA", "categorical")
    returns = []
    for source in (checkpoint, artifact):
        result = runner.invoke(
            app, ["evaluate", str(source), "--episodes", "3", "--num-workers", "0", "--json"]
        )
        assert result.exit_code == 0, result.stderr
        returns.append([e["return"] for e in json.loads(result.stdout)["episodes"]])
    assert returns[1] == returns[0]
