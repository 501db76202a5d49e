"""``rlserve train`` through the installed console script, and its error paths."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from training import Algorithm

pytestmark = pytest.mark.integration

RLSERVE = shutil.which("rlserve", path=str(Path(sys.executable).parent)) or "rlserve"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RLSERVE, *args], capture_output=True, text=True, cwd=cwd, timeout=180, check=False
    )


def test_train_one_iteration_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    out = run(
        "train",
        "--algo",
        "PPO",
        "--env",
        "CartPole-v1",
        "--stop-iters",
        "2",
        "--set",
        "train_batch_size=128",
        "--set",
        "minibatch_size=64",
        "--checkpoint-dir",
        str(tmp_path / "run"),
        "--seed",
        "3",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "iter    2" in out.stdout
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("best checkpoint: ")
    path = last.removeprefix("best checkpoint: ").strip()
    algo = Algorithm.from_checkpoint(path)
    try:
        assert algo.iteration == 2
        assert algo.config.train_batch_size == 128
        assert algo.config.seed == 3
    finally:
        algo.stop()
    assert (tmp_path / "run" / "results.jsonl").read_text().count("\n") == 2


def test_train_from_a_tuned_example_with_traces(tmp_path: Path) -> None:
    out = run(
        "train",
        "--config",
        "cartpole_dqn",
        "--stop-iters",
        "1",
        "--set",
        "min_sample_timesteps_per_iteration=200",
        "--output",
        str(tmp_path / "traces"),
        "--checkpoint-dir",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "training DQN on CartPole-v1" in out.stdout
    assert list((tmp_path / "traces").glob("output-*_worker-0_0.json"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algo", "XYZ"], "--algo 'XYZ'"),
        (["--env", "CartPol-v1"], "closest registered ids: CartPole-v1"),
        (["--env", "CartPole-v1", "--set", "lrr=1"], "did you mean 'lr'"),
        (["--env", "CartPole-v1", "--set", "lr"], "expected key=value"),
        (["--env", "CartPole-v1", "--set", "gamma=2"], "gamma"),
        (["--config", "no/such/file.yaml"], "cannot read it"),
    ],
)
def test_train_errors_are_one_line_exit_code_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = run("train", *args, "--checkpoint-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error: ")
