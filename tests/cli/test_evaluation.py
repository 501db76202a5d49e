"""``rlserve evaluate``: seeded episodes from a checkpoint, an artifact or a served URL."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rlserve.cli import app
from rlserve.jobs.evaluation import (
    EvaluationError,
    EvaluationOptions,
    EvaluationReport,
    PolicySource,
    episode_seeds,
    split_seeds,
    summarize,
)
from serving.episodes import Episode
from tests.helpers.served import TOKEN, served_url

RLSERVE = shutil.which("rlserve", path=str(Path(sys.executable).parent)) or "rlserve"
runner = CliRunner()
__all__ = ["served_url"]  # the fixture (tests.helpers.served)


def evaluate(*args: str | Path) -> Any:
    return runner.invoke(app, ["evaluate", *map(str, args)])


def returns(result: Any) -> list[float]:
    assert result.exit_code == 0, result.stderr
    return [e["return"] for e in json.loads(result.stdout)["episodes"]]


def one_line_error(result: Any, code: int = 2) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return str(lines[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- unit: seeds and summary
def test_episode_i_uses_seed_plus_i() -> None:
    assert episode_seeds(7, 4) == [7, 8, 9, 10]


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 10, 25])
def test_seeds_split_into_contiguous_chunks_whatever_the_worker_count(workers: int) -> None:
    seeds = episode_seeds(100, 10)
    chunks = split_seeds(seeds, workers)
    assert len(chunks) == min(workers, 10)
    assert [s for chunk in chunks for s in chunk] == seeds
    assert all(chunks) and max(map(len, chunks)) - min(map(len, chunks)) <= 1


def test_summary_statistics() -> None:
    episodes = [
        Episode(0, 10.0, 10, True, False),
        Episode(1, 20.0, 20, True, False),
        Episode(2, 30.0, 30, False, True),
        Episode(3, 40.0, 40, True, False),
    ]
    s = summarize(episodes, wall_s=2.0)
    assert s["episodes"] == 4
    assert s["return_mean"] == 25.0
    assert s["return_std"] == pytest.approx(11.1803398875)  # population std
    assert (s["return_min"], s["return_max"]) == (10.0, 40.0)
    assert (s["length_mean"], s["length_min"], s["length_max"]) == (25.0, 10.0, 40.0)
    assert s["env_steps"] == 100
    assert s["episodes_per_s"] == 2.0
    assert s["env_steps_per_s"] == 50.0


def _report(min_return: float | None) -> EvaluationReport:
    source = PolicySource("url", "http://x", "PPO", "v1", {}, {}, policy="p", token=TOKEN)
    options = EvaluationOptions(
        "http://x", env="CartPole-v1", episodes=2, token=TOKEN, min_return=min_return
    )
    episodes = [Episode(5, 1.0, 1, True, False), Episode(6, 3.0, 3, False, True)]
    return EvaluationReport(
        options, source, "CartPole-v1", "--env", 1, episodes, {"return_mean": 2.0}
    )


def test_report_json_and_gate() -> None:
    assert _report(None).passed is None
    assert _report(2.0).passed is True
    assert _report(2.5).passed is False
    data = _report(2.5).to_json()
    assert TOKEN not in json.dumps(data)
    assert data["passed"] is False
    assert data["settings"]["min_return"] == 2.5
    assert data["episodes"][1] == {
        "seed": 6,
        "return": 3.0,
        "length": 3,
        "terminated": False,
        "truncated": True,
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"episodes": 0}, "--episodes must be >= 1"),
        ({"num_workers": -1}, "--num-workers must be >= 0"),
        ({"seed": -3}, "--seed must be in"),
        ({"max_episode_steps": 0}, "--max-episode-steps must be >= 1"),
        ({"min_return": float("nan")}, "--min-return must be a finite number"),
        ({"policy": "p"}, r"--policy and --token apply only to an http\(s\)://"),
        ({"session": True}, r"--session applies only to an http\(s\)://"),
        ({"output": "/no/such/dir/report.json"}, "directory /no/such/dir does not exist"),
    ],
)
def test_option_values_are_checked(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        EvaluationOptions("runs/x", **changes).validate()


# ---------------------------------------------------------------- unit: errors before loading
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--episodes", "0"], "--episodes must be >= 1, got 0"),
        (["--num-workers", "-2"], "--num-workers must be >= 0, got -2"),
        (["--min-return", "inf"], "--min-return must be a finite number"),
        (["--log-level", "LOUD"], "--log-level 'LOUD'"),
    ],
)
def test_bad_option_values_fail_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    line = one_line_error(evaluate(tmp_path, *args))
    assert message in line


def test_a_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    line = one_line_error(evaluate(tmp_path / "nope"))
    assert line == f"error: {tmp_path / 'nope'}: no such file or directory"


def test_a_directory_that_is_neither_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    line = one_line_error(evaluate(tmp_path))
    assert "neither a checkpoint (metadata.json) nor an artifact (manifest.json)" in line


def test_other_url_schemes_are_refused() -> None:
    line = one_line_error(evaluate("ftp://127.0.0.1/policy"))
    assert "only http:// and https:// URLs are supported" in line


# ---------------------------------------------------------------- integration
@pytest.mark.integration
def test_checkpoint_two_episodes_and_the_json_report(
    cartpole_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    result = evaluate(
        cartpole_checkpoint, "--episodes", "2", "--num-workers", "0", "--seed", "3", "-o", out
    )
    assert result.exit_code == 0, result.stderr
    assert "on CartPole-v1 (env from the checkpoint)" in result.stdout
    assert "episodes/s" in result.stdout and "return" in result.stdout
    assert f"wrote {out}" in result.stdout
    data = json.loads(out.read_text())
    assert data["format"] == "rlserve-evaluation"
    assert data["source"]["kind"] == "checkpoint"
    assert data["source"]["algorithm"] == "PPO"
    assert data["env"] == "CartPole-v1"
    assert data["settings"] == {
        "episodes": 2,
        "seed": 3,
        "num_workers": 0,
        "explore": False,
        "max_episode_steps": None,
        "min_return": None,
    }
    assert data["passed"] is None
    episodes = data["episodes"]
    assert [e["seed"] for e in episodes] == [3, 4]
    assert all(e["terminated"] != e["truncated"] for e in episodes)
    assert all(e["return"] == e["length"] > 0 for e in episodes)  # CartPole: 1 per step
    mean = sum(e["return"] for e in episodes) / 2
    assert data["summary"]["return_mean"] == pytest.approx(mean)
    assert not list(tmp_path.glob(".report.json.tmp*"))


@pytest.mark.integration
def test_checkpoint_and_its_artifact_play_the_same_episodes(
    cartpole_checkpoint: Path, cartpole_artifact: Path
) -> None:
    common = ["--episodes", "3", "--num-workers", "0", "--json"]
    from_checkpoint = returns(evaluate(cartpole_checkpoint, *common))
    from_artifact = returns(evaluate(cartpole_artifact, *common))
    assert from_checkpoint == from_artifact


@pytest.mark.integration
def test_artifact_results_do_not_depend_on_the_worker_count(
    cartpole_artifact: Path, ray_session: Any
) -> None:
    for explore in ("--no-explore", "--explore"):
        common = ["--episodes", "4", "--seed", "11", explore, "--json"]
        in_process = evaluate(cartpole_artifact, *common, "--num-workers", "0")
        on_ray = evaluate(cartpole_artifact, *common, "--num-workers", "2")
        assert returns(in_process) == returns(on_ray)
        assert json.loads(on_ray.stdout)["workers_used"] == 2
        assert json.loads(in_process.stdout)["workers_used"] == 0
    assert ray_session.is_initialized()  # a Ray instance that was not ours keeps running


@pytest.mark.integration
def test_exploring_checkpoint_episodes_are_reproducible_on_ray(
    cartpole_checkpoint: Path, ray_session: Any
) -> None:
    common = ["--episodes", "3", "--explore", "--json"]
    first = returns(evaluate(cartpole_checkpoint, *common, "--num-workers", "0"))
    assert returns(evaluate(cartpole_checkpoint, *common, "--num-workers", "3")) == first
    other = returns(evaluate(cartpole_checkpoint, *common, "--num-workers", "0", "--seed", "50"))
    assert other != first


@pytest.mark.integration
def test_max_episode_steps_truncates(cartpole_artifact: Path) -> None:
    common = ["--episodes", "2", "--num-workers", "0", "--json"]
    result = evaluate(cartpole_artifact, *common, "--max-episode-steps", "5")
    assert result.exit_code == 0, result.stderr
    episodes = json.loads(result.stdout)["episodes"]
    assert all(e["length"] <= 5 for e in episodes)
    assert any(e["truncated"] for e in episodes)


@pytest.mark.integration
def test_min_return_gates_with_exit_code_1(cartpole_artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "gate.json"
    common: list[str | Path] = [
        cartpole_artifact,
        "--episodes",
        "2",
        "--num-workers",
        "0",
        "-o",
        out,
    ]
    failed = evaluate(*common, "--min-return", "100000")
    line = one_line_error(failed, code=1)
    assert line.startswith("FAILED: mean return ")
    assert line.endswith("is below --min-return 100000")
    assert "return" in failed.stdout  # the table is still printed
    assert json.loads(out.read_text())["passed"] is False
    passed = evaluate(*common, "--min-return", "1")
    assert passed.exit_code == 0, passed.stderr
    assert json.loads(out.read_text())["passed"] is True


@pytest.mark.integration
def test_a_corrupt_artifact_fails_cleanly(cartpole_artifact: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(cartpole_artifact, broken)
    (broken / "model.onnx").write_bytes(b"nope")
    assert "model.onnx" in one_line_error(evaluate(broken, "--num-workers", "0"))


@pytest.mark.integration
def test_a_corrupt_checkpoint_fails_cleanly(cartpole_checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(cartpole_checkpoint, broken)
    weights = broken / "module.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    assert "module.safetensors" in one_line_error(evaluate(broken, "--num-workers", "0"))


@pytest.mark.integration
def test_an_unknown_env_fails_cleanly(cartpole_artifact: Path) -> None:
    line = one_line_error(evaluate(cartpole_artifact, "--env", "CartPol-v1", "--num-workers", "0"))
    assert "env 'CartPol-v1' is not a registered gymnasium id" in line
    assert "CartPole-v1" in line  # the closest registered id is suggested


@pytest.mark.integration
def test_an_env_that_does_not_fit_the_policy_fails_cleanly(cartpole_artifact: Path) -> None:
    line = one_line_error(evaluate(cartpole_artifact, "--env", "Pendulum-v1"))
    assert "env 'Pendulum-v1' observes Box" in line
    assert "but the policy expects" in line


@pytest.mark.integration
def test_an_artifact_whose_source_checkpoint_is_gone_needs_env(
    cartpole_checkpoint: Path, tmp_path: Path
) -> None:
    from exporters import export_checkpoint

    copy = tmp_path / "checkpoint"
    shutil.copytree(cartpole_checkpoint, copy)
    artifact = export_checkpoint(copy, tmp_path / "artifact", ["onnx"])
    shutil.rmtree(copy)
    line = one_line_error(evaluate(artifact, "--num-workers", "0"))
    assert "give --env" in line
    result = evaluate(artifact, "--env", "CartPole-v1", "--episodes", "1", "--num-workers", "0")
    assert result.exit_code == 0, result.stderr
    assert "(env from --env)" in result.stdout


@pytest.mark.integration
def test_an_unreachable_url_fails_cleanly() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(evaluate(url, "--env", "CartPole-v1"))
    assert line.startswith(f"error: cannot reach {url}")


@pytest.mark.integration
def test_a_failing_ray_worker_becomes_one_clear_error(ray_session: Any) -> None:
    from rlserve.jobs.evaluation import EnvSpec, _play_on_ray

    url = f"http://127.0.0.1:{free_port()}"  # the service went away after it was opened
    source = PolicySource("url", url, "PPO", "v1", {}, {}, policy="cartpole")
    with pytest.raises(EvaluationError, match=f"^policy service {url}: "):
        _play_on_ray(source, EnvSpec("CartPole-v1"), [[0], [1]], False)


@pytest.mark.integration
def test_a_served_url_plays_the_same_episodes_as_the_artifact(
    served_url: str, cartpole_artifact: Path
) -> None:
    common = ["--episodes", "2", "--num-workers", "0", "--explore", "--seed", "5", "--json"]
    over_http = evaluate(served_url, "--env", "CartPole-v1", "--token", TOKEN, *common)
    local = evaluate(cartpole_artifact, *common)
    assert returns(over_http) == returns(local)
    data = json.loads(over_http.stdout)
    assert data["source"]["kind"] == "url"
    assert data["source"]["policy"] == "cartpole"
    assert data["source"]["version"] == json.loads(local.stdout)["source"]["version"]
    args = [served_url, "--env", "CartPole-v1", "--token", TOKEN, "--session", *common]
    over_session = evaluate(*args)
    assert returns(over_session) == returns(local)
    assert json.loads(over_session.stdout)["source"]["session"] is True


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "CartPole-v1"], "(give the service's --token)"),
        (["--env", "CartPole-v1", "--token", TOKEN, "--policy", "nope"], "serves no policy 'nope'"),
        (["--token", TOKEN], "give --env: a served policy does not record it"),
    ],
)
def test_url_errors_fail_cleanly(served_url: str, args: list[str], message: str) -> None:
    assert message in one_line_error(evaluate(served_url, *args, "--num-workers", "0"))


# ---------------------------------------------------------------- the installed script
@pytest.mark.integration
def test_console_script_smoke(cartpole_artifact: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [RLSERVE, "evaluate", str(cartpole_artifact), "--episodes", "2", "--num-workers", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "episodes/s" in out.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "rlserve", "evaluate", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: {tmp_path / 'missing'}: no such file or directory"
