"""``rlserve train`` and ``rlserve evaluate`` with SAC, and the progress figures SAC's runs show.

One tiny SAC run through the console script (a module fixture) is shared: it must write a
checkpoint that loads as SAC, evaluates through ``rlserve evaluate`` and exports through
``rlserve export`` into an artifact that evaluates the same. The tuned example runs
in-process through the same CLI (typer's runner) with its own settings and a short stop.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from rlserve.cli import app
from rlserve.jobs.progress import EVAL_RETURN, TrainingProgress
from training import Algorithm
from training.algorithms import ALGORITHMS
from training.tuned_examples import EXAMPLES_DIR

RLSERVE = shutil.which("rlserve", path=str(Path(sys.executable).parent)) or "rlserve"
TINY = [
    "--set",
    "min_sample_timesteps_per_iteration=200",  # one whole Pendulum episode per iteration
    "--set",
    "num_steps_sampled_before_learning_starts=100",
    "--set",
    "train_batch_size=32",
    "--set",
    'model={"fcnet_hiddens": [16, 16]}',
    "--set",
    'q_model={"fcnet_hiddens": [16, 16]}',
    "--set",
    "actor_lr=0.002",
]
runner = CliRunner()


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``rlserve train --algo SAC --env Pendulum-v1`` for 2 tiny iterations: (run dir, stdout)."""
    root = tmp_path_factory.mktemp("sac_cli")
    out = subprocess.run(
        [RLSERVE, "train", "--algo", "sac", "--env", "Pendulum-v1", "--stop-iters", "2", *TINY,
         "--seed", "3", "--checkpoint-dir", str(root / "run")],
        capture_output=True, text=True, cwd=root, timeout=180, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "run", out.stdout


@pytest.mark.integration
def test_train_sac_writes_a_checkpoint_with_sacs_settings_and_metrics(
    sac_run: tuple[Path, str],
) -> None:
    run_dir, stdout = sac_run
    assert "training SAC on Pendulum-v1" in stdout
    assert "iter    2  steps      400" in stdout
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("best checkpoint: ")
    with Algorithm.from_checkpoint(last.removeprefix("best checkpoint: ").strip()) as algo:
        assert algo.name == "SAC"
        assert algo.iteration == 2
        assert algo.config.actor_lr == 0.002 and algo.config.lr is None
        assert algo.config.seed == 3
        action = algo.compute_single_action(np.array([1.0, 0.0, 0.0], np.float32), explore=False)
        assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    learner = rows[-1]["learners"]["default_policy"]
    for key in ("critic_loss", "actor_loss", "alpha_loss", "alpha_value", "mean_q"):
        assert math.isfinite(learner[key]), key
    # One gradient step per sampling round of one env step; the round that resets the env
    # after an episode (no transition) counts as a round too.
    assert 200 <= learner["num_updates"] <= 201
    header = (run_dir / "progress.csv").read_text().splitlines()[0].split(",")
    assert "learners/default_policy/critic_loss" in header
    assert "learners/default_policy/alpha_value" in header


@pytest.mark.integration
def test_evaluate_plays_the_sac_checkpoint_deterministically(sac_run: tuple[Path, str]) -> None:
    run_dir, _ = sac_run
    checkpoint = run_dir / "checkpoint_final"
    reports = []
    for _ in range(2):
        result = runner.invoke(
            app, ["evaluate", str(checkpoint), "--episodes", "2", "--num-workers", "0", "--json"]
        )
        assert result.exit_code == 0, result.stderr
        reports.append(json.loads(result.stdout))
    first, second = reports
    assert first["source"]["algorithm"] == "SAC"
    returns = [episode["return"] for episode in first["episodes"]]
    assert len(returns) == 2 and all(-2000.0 < r < 0.0 for r in returns)
    assert returns == [episode["return"] for episode in second["episodes"]]  # squashed mean


@pytest.mark.integration
def test_the_exported_sac_artifact_evaluates_as_the_checkpoint(
    sac_run: tuple[Path, str], tmp_path: Path
) -> None:
    """``rlserve export`` then ``rlserve evaluate``: the ONNX graph plays the same episodes."""
    checkpoint = sac_run[0] / "checkpoint_final"
    artifact = tmp_path / "artifact"
    exported = runner.invoke(
        app, ["export", str(checkpoint), "--out", str(artifact), "--format", "onnx"]
    )
    assert exported.exit_code == 0, exported.stderr
    assert "exported SAC policy" in exported.stdout
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["algorithm"] == "SAC"
    assert manifest["action_distribution"] == "squashed_gaussian"
    returns = []
    for source in (checkpoint, artifact):
        result = runner.invoke(
            app, ["evaluate", str(source), "--episodes", "2", "--num-workers", "0", "--json"]
        )
        assert result.exit_code == 0, result.stderr
        returns.append([e["return"] for e in json.loads(result.stdout)["episodes"]])
    assert returns[1] == pytest.approx(returns[0], rel=1e-3)


@pytest.mark.integration
def test_train_from_the_pendulum_sac_example_evaluates_each_iteration(tmp_path: Path) -> None:
    """The tuned example's own settings, with a short stop and one evaluation episode."""
    result = runner.invoke(
        app,
        ["train", "--config", str(EXAMPLES_DIR / "pendulum_sac.yaml"), "--stop-iters", "1",
         "--set", "min_sample_timesteps_per_iteration=200", "--set", "evaluation_duration=1",
         "--checkpoint-dir", str(tmp_path / "run")],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "training SAC on Pendulum-v1" in result.stdout
    assert "evaluation/env_runners/episode_return_mean >= -200" in result.stdout
    assert " eval " in result.stdout  # the progress line shows the evaluation's return
    (row,) = map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())
    assert math.isfinite(row["evaluation"]["env_runners"]["episode_return_mean"])
    assert row["config"]["actor_lr"] == 0.001  # from the example
    assert row["learners"]["default_policy"]["num_updates"] == 101  # learning from step 100


@pytest.mark.parametrize("command", ["train", "tune"])
def test_algo_help_names_every_registered_algorithm(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    (line,) = [line for line in result.stdout.splitlines() if "--algo" in line]
    for name in ALGORITHMS:
        assert name in line, (name, line)


def test_sac_refuses_a_single_lr_naming_its_three() -> None:
    result = runner.invoke(app, ["train", "--algo", "SAC", "--env", "Pendulum-v1",
                                 "--set", "lr=0.001"])  # fmt: skip
    assert result.exit_code == 2
    assert "set actor_lr, critic_lr, alpha_lr" in result.stderr


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _result(iteration: int, ret: float, evaluated: float | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "training_iteration": iteration,
        "num_env_steps_sampled_lifetime": 1000 * iteration,
        "num_env_steps_sampled": 1000,
        "env_runners": {"episode_return_mean": ret},
    }
    if evaluated is not None:
        result["evaluation"] = {"env_runners": {"episode_return_mean": evaluated}}
    return result


def test_progress_estimates_an_evaluation_return_below_zero() -> None:
    """SAC's examples stop at an evaluation return of -200: the bar starts at the first return."""
    clock = Clock()
    out = io.StringIO()
    con = Console(file=out, force_terminal=False, width=120, color_system=None)
    with TrainingProgress(con, {EVAL_RETURN: -200.0}, clock=clock) as progress:
        for i, evaluated in enumerate([-1400.0, -1100.0, -800.0], start=1):
            clock.now += 10.0
            progress.update(_result(i, -1300.0, evaluated))
        (status,) = progress.criteria()
        assert status.fraction == pytest.approx(600 / 1200)  # from -1400 to -800 of -200
        assert status.estimated
        assert status.eta_s == pytest.approx(20.0)  # 30 a second, 600 to go
        clock.now += 10.0
        progress.update(_result(4, -1200.0, None))  # an iteration that did not evaluate
        line = out.getvalue().splitlines()
        assert " eval " in line[2] and " eval " not in line[3]
        assert line[2].split()[6:8] == ["eval", "-800.00"]
        clock.now += 10.0
        progress.update(_result(5, -1000.0, -150.0))
        assert progress.criteria()[0].fraction == 1.0
        assert progress.eta_s() == 0.0
