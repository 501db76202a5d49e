"""``rlserve train`` through the installed console script, and its error paths."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.tfevents import read_scalars
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
    with Algorithm.from_checkpoint(path) as algo:
        assert algo.iteration == 2
        assert algo.config.train_batch_size == 128
        assert algo.config.seed == 3
    _check_result_files(tmp_path / "run", iterations=2)


def _check_result_files(run_dir: Path, iterations: int) -> None:
    """results.jsonl, progress.csv and one event file hold the same ``iterations`` results."""
    results = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [r["training_iteration"] for r in results] == list(range(1, iterations + 1))
    with (run_dir / "progress.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["training_iteration"]) for row in rows] == list(range(1, iterations + 1))
    steps = [r["num_env_steps_sampled_lifetime"] for r in results]
    assert [int(row["num_env_steps_sampled_lifetime"]) for row in rows] == steps
    assert "env_runners/episode_return_mean" in rows[0]
    assert "learners/default_policy/total_loss" in rows[0]
    (events,) = run_dir.glob("events.out.tfevents.*")
    scalars = read_scalars(events)
    assert [step for step, _ in scalars] == steps  # TensorBoard step: lifetime env steps
    assert [values["training_iteration"] for _, values in scalars] == list(range(1, iterations + 1))
    assert all("learners/default_policy/total_loss" in values for _, values in scalars)


def test_train_on_a_terminal_shows_a_live_display(tmp_path: Path) -> None:
    """Under a pseudo-terminal ``rlserve train`` redraws a rich display instead of lines."""
    import pty

    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [
            RLSERVE,
            "train",
            "--env",
            "CartPole-v1",
            "--stop-iters",
            "3",
            "--stop-timesteps",
            "100000",
            "--set",
            "train_batch_size=128",
            "--set",
            "minibatch_size=64",
            "--checkpoint-dir",
            str(tmp_path / "run"),
        ],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        cwd=tmp_path,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"},
    )
    os.close(secondary)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: every holder of the terminal has closed it
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(primary)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raw = b"".join(chunks).decode(errors="replace")
    assert "\x1b[2K" in raw  # the display erases and redraws its lines
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    for expected in ("iteration 3", "steps/s", "ETA", "iterations", "3 / 3", "/ 100,000", "━"):
        assert expected in text, (expected, text)
    assert not re.search(r"^iter +\d", text, re.MULTILINE)  # no plain lines on a terminal
    last = text.strip().splitlines()[-1]
    assert last.startswith("best checkpoint: "), text


def test_ctrl_c_writes_a_final_checkpoint_and_exits_cleanly(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            RLSERVE,
            "train",
            "--env",
            "CartPole-v1",
            "--stop-iters",
            "100000",
            "--set",
            "train_batch_size=64",
            "--set",
            "minibatch_size=32",
            "--set",
            "num_epochs=1",
            "--checkpoint-dir",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        for line in proc.stdout:  # bounded by pytest's per-test timeout
            seen.append(line)
            if line.startswith("iter    2"):
                break
        assert seen and seen[-1].startswith("iter    2"), "".join(seen)
        time.sleep(0.3)  # land the signal somewhere inside a later iteration
        proc.send_signal(signal.SIGINT)
        rest, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    stdout = "".join(seen) + rest
    assert "interrupted: writing a final checkpoint" in stdout
    assert "Traceback" not in stderr
    last = stdout.strip().splitlines()[-1]
    assert last == f"best checkpoint: {run_dir / 'checkpoint_final'}"
    printed = [line for line in stdout.splitlines() if line.startswith("iter ")]
    logged = (run_dir / "results.jsonl").read_text().count("\n")
    # Every result printed was logged first; Ctrl-C may cut the last progress line short.
    assert 2 <= len(printed) <= logged <= len(printed) + 1
    _check_result_files(run_dir, iterations=logged)
    with Algorithm.from_checkpoint(run_dir / "checkpoint_final") as algo:
        # The final checkpoint holds the last logged iteration (or one that Ctrl-C cut off
        # between its end and its result reaching the loop).
        assert algo.iteration in (logged, logged + 1)


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


def test_resume_continues_from_a_checkpoint(cartpole_checkpoint: Path, tmp_path: Path) -> None:
    before = Algorithm.from_checkpoint(cartpole_checkpoint)
    try:
        start_iteration = before.iteration
        start_steps = before.counters["num_env_steps_sampled_lifetime"]
    finally:
        before.stop()
    run_dir = tmp_path / "resumed"
    out = run(
        "train",
        "--resume",
        str(cartpole_checkpoint),
        "--stop-iters",
        str(start_iteration + 1),
        "--checkpoint-dir",
        str(run_dir),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    first = json.loads((run_dir / "results.jsonl").read_text().splitlines()[0])
    assert first["training_iteration"] == start_iteration + 1  # counters continue
    assert first["num_env_steps_sampled_lifetime"] > start_steps
    refused = run(
        "train", "--resume", str(cartpole_checkpoint), "--env", "Pendulum-v1", cwd=tmp_path
    )
    assert refused.returncode == 2 and "--resume continues" in refused.stderr


def test_resume_from_a_run_directory_without_a_valid_checkpoint(tmp_path: Path) -> None:
    """A run directory none of whose checkpoints verifies: one line naming each, exit 2."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoint_000001").mkdir(parents=True)  # what a kill used to leave
    (run_dir / "checkpoint_000002").mkdir()
    (run_dir / "checkpoint_000002" / "metadata.json").write_text("{")
    out = run("train", "--resume", str(run_dir), "--checkpoint-dir", str(run_dir), cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: run directory {run_dir}: no checkpoint verifies (")
    assert "checkpoint_000001: metadata.json is missing" in line
    assert "checkpoint_000002: cannot read metadata.json" in line
    assert not (run_dir / "results.jsonl").exists()  # nothing started
