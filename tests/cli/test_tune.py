"""``rlserve tune``: a two-trial grid through Ray Tune (subprocess), and its refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlserve.jobs.sweep import parse_grid
from training import Algorithm

pytestmark = pytest.mark.integration

RLSERVE = shutil.which("rlserve", path=str(Path(sys.executable).parent)) or "rlserve"


def _tune(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rlserve tune --env CartPole-v1 ARGS`` with its trials under ``tmp_path``."""
    return subprocess.run(
        [RLSERVE, "tune", "--env", "CartPole-v1", *args, "--storage", str(tmp_path / "tune")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        check=False,
    )


def test_parse_grid_reads_json_values() -> None:
    assert parse_grid(["lr=0.01,0.001", 'model={"fcnet_hiddens":[8]}']) == {
        "lr": [0.01, 0.001],
        "model": [{"fcnet_hiddens": [8]}],
    }
    with pytest.raises(ValueError, match="expected key=v1,v2"):
        parse_grid(["lr"])


def test_tune_sweeps_a_grid_and_names_a_loadable_best_checkpoint(tmp_path: Path) -> None:
    out = _tune(
        tmp_path,
        "--grid",
        "lr=0.001,0.0001",
        "--set",
        "train_batch_size=128",
        "--set",
        "minibatch_size=64",
        "--stop-iters",
        "2",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("best checkpoint: ")]
    assert len(lines) == 1
    assert "0.0001" in out.stdout and "0.001" in out.stdout
    with Algorithm.from_checkpoint(lines[0].removeprefix("best checkpoint: ").strip()) as algo:
        assert algo.iteration == 2
        assert algo.config.lr in (0.001, 0.0001)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "at least one --grid"),
        (["--grid", "lr"], "expected key=v1,v2"),
        (["--grid", "lrr=0.1,0.2"], "did you mean 'lr'"),
    ],
)
def test_tune_refusals_are_one_line_exit_code_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = subprocess.run(
        [RLSERVE, "tune", "--env", "CartPole-v1", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("lr=0.01,0.001", "set actor_lr, critic_lr, alpha_lr (got 0.01)"),
        ("target_entropy=auto,high", "target_entropy: expected a float or 'auto'"),
    ],
)
def test_tune_checks_every_grid_value_before_starting_ray(grid: str, message: str) -> None:
    """A value the config refuses is one line, exit 2, before any trial (or Ray) starts."""
    from typer.testing import CliRunner

    from rlserve.cli import app

    result = CliRunner().invoke(
        app, ["tune", "--algo", "SAC", "--env", "Pendulum-v1", "--grid", grid]
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "trials" not in result.stdout


def test_tune_refuses_trials_larger_than_the_cluster_up_front(tmp_path: Path) -> None:
    # 1 CPU for the driver plus 1 per runner: 2 runners already overflow a 2-CPU machine, where
    # Tune would wait for the trial forever. One grid value is enough to be refused.
    runners = (os.cpu_count() or 2) + 1
    out = _tune(tmp_path, "--grid", f"num_env_runners=0,{runners}", "--stop-iters", "1")
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"a trial needs {runners + 1} CPUs" in out.stderr
    assert "num_cpus_per_env_runner" in out.stderr and "Traceback" not in out.stderr
