"""Algorithm checkpoints: layout, no pickle, verified round trips, tampering, atomic saves,
and the newest verifying checkpoint of a run directory."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch

from formats import safeio
from formats.errors import RlserveError
from formats.spaces import space_from_json, space_to_json
from tests.helpers.configs import tiny_ppo
from training import (
    PPO,
    Algorithm,
    CheckpointError,
    CheckpointVersionError,
    ConfigError,
    PPOConfig,
)
from training import metrics as m
from training.checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from training.run_directory import (
    find_latest_checkpoint,
    is_run_directory,
    latest_checkpoint,
    resolve_checkpoint,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = (
    "algorithm_config.json",
    "module.safetensors",
    "learner_state.safetensors",
    "learner_state.json",
)


class Algos:
    """Builds algorithms and stops every one of them at teardown."""

    def __init__(self) -> None:
        self.built: list[Algorithm] = []

    def track(self, algo: Algorithm) -> Algorithm:
        self.built.append(algo)
        return algo

    def build(self, config: PPOConfig | None = None, iterations: int = 1) -> Algorithm:
        algo = self.track((config or tiny_ppo()).build())
        for _ in range(iterations):
            algo.train()
        return algo

    def restore(self, path: str | Path, **overrides: Any) -> Algorithm:
        return self.track(Algorithm.from_checkpoint(str(path), **overrides))


@pytest.fixture
def algos() -> Iterator[Algos]:
    holder = Algos()
    yield holder
    for algo in holder.built:
        algo.stop()


@pytest.fixture
def saved(algos: Algos, tmp_path: Path) -> tuple[Algorithm, Path]:
    algo = algos.build()
    path = tmp_path / "ckpt"
    result = algo.save(str(path))
    assert Path(result.checkpoint.path) == path
    return algo, path


def _observations(algo: Algorithm, count: int = 50) -> np.ndarray:
    space = algo.observation_space
    space.seed(123)
    return np.stack([space.sample() for _ in range(count)])


def _assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert value.dtype == b[key].dtype, key
        np.testing.assert_array_equal(value, b[key], err_msg=key)


def _weights_digest(weights: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(weights):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(weights[key]).tobytes())
    return digest.hexdigest()


def _read_metadata(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "metadata.json").read_text())
    return data


def _write_metadata(path: Path, metadata: dict[str, Any]) -> None:
    (path / "metadata.json").write_text(json.dumps(metadata))


# ----------------------------------------------------------------- layout
def test_save_without_directory_returns_checkpoint_dir(algos: Algos) -> None:
    algo = algos.build()
    result = algo.save()
    path = Path(result.checkpoint.path)
    try:
        assert path.is_dir()
        assert (path / "metadata.json").is_file()
        assert algos.restore(path).iteration == 1
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_checkpoint_layout_and_metadata(saved: tuple[Algorithm, Path]) -> None:
    algo, path = saved
    names = {p.name for p in path.iterdir()}
    assert names == {"metadata.json", *PAYLOAD}  # NoFilter: no filter_state.json
    meta = _read_metadata(path)
    assert meta["format"] == CHECKPOINT_FORMAT == "rlserve-checkpoint"
    assert meta["format_version"] == CHECKPOINT_VERSION
    assert meta["algorithm"] == "PPO"
    assert meta["iteration"] == 1 == algo.iteration
    assert meta["counters"] == algo.counters
    assert meta["counters"]["num_env_steps_sampled_lifetime"] > 0
    assert meta["observation_space"] == space_to_json(algo.observation_space)
    assert meta["action_space"] == space_to_json(algo.action_space)
    assert space_from_json(meta["observation_space"], "observation_space") == (
        algo.observation_space
    )
    assert space_from_json(meta["action_space"], "action_space") == algo.action_space
    versions = meta["library_versions"]
    for library in ("torch", "gymnasium", "ray", "numpy", "safetensors"):
        assert isinstance(versions[library], str)
        assert versions[library] not in ("", "unknown")
    assert versions["numpy"] == np.__version__
    # Every payload file is listed with its real sha256 and size; metadata.json is not.
    assert set(meta["files"]) == set(PAYLOAD)
    for name, entry in meta["files"].items():
        data = (path / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    config = json.loads((path / "algorithm_config.json").read_text())
    assert config == algo.config.to_json_dict()
    assert config["env"] == "CartPole-v1"
    assert config["train_batch_size"] == 64


def test_no_file_in_checkpoint_is_a_pickle(saved: tuple[Algorithm, Path]) -> None:
    _, path = saved
    files = [p for p in path.rglob("*") if p.is_file()]
    assert len(files) == 1 + len(PAYLOAD)
    for file in files:
        head = file.read_bytes()[:16]
        assert not head.startswith(b"\x80"), file.name  # pickle protocol 2+ opcode PROTO
        assert not head.startswith(b"PK"), file.name  # torch.save's zip container
        if file.suffix == ".json":
            json.loads(file.read_text(encoding="utf-8"))
        else:
            assert file.suffix == ".safetensors"
            header_len = int.from_bytes(head[:8], "little")
            header = json.loads(file.read_bytes()[8 : 8 + header_len])
            assert isinstance(header, dict)


# ----------------------------------------------------------------- round trips
def test_round_trip_restores_everything(saved: tuple[Algorithm, Path], algos: Algos) -> None:
    algo, path = saved
    restored = algos.restore(path)
    assert type(restored) is type(algo)
    _assert_same_weights(restored.get_weights(), algo.get_weights())
    assert restored.iteration == algo.iteration == 1
    assert restored.counters == algo.counters
    assert (
        restored.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        == algo.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    )
    assert restored.config == algo.config
    obs = _observations(algo)
    expected = algo.compute_actions(obs, explore=False)
    np.testing.assert_array_equal(restored.compute_actions(obs, explore=False), expected)
    singles = [restored.compute_single_action(o, explore=False) for o in obs]
    assert singles == expected.tolist()
    # Optimizer state came back too.
    assert isinstance(algo, PPO)
    assert isinstance(restored, PPO)
    state_a = algo.learner.optimizer.state_dict()["state"]
    state_b = restored.learner.optimizer.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for index in state_a:
        for name, value in state_a[index].items():
            np.testing.assert_array_equal(np.asarray(state_b[index][name]), np.asarray(value))
    # Training goes on from the restored iteration and counters.
    sampled = restored.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    result = restored.train()
    assert result[m.TRAINING_ITERATION] == 2
    assert restored.iteration == 2
    assert result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] > sampled


def test_from_checkpoint_applies_overrides(saved: tuple[Algorithm, Path], algos: Algos) -> None:
    algo, path = saved
    restored = algos.restore(path, num_envs_per_env_runner=1)
    assert restored.config.num_envs_per_env_runner == 1
    assert restored.env_runner.num_envs == 1
    assert algo.config.num_envs_per_env_runner == 2
    assert restored.config.train_batch_size == 64
    _assert_same_weights(restored.get_weights(), algo.get_weights())
    assert restored.train()[m.TRAINING_ITERATION] == 2


def test_from_checkpoint_rejects_bad_override(saved: tuple[Algorithm, Path]) -> None:
    _, path = saved
    with pytest.raises(ConfigError, match="num_envs_per_env_runnr"):
        Algorithm.from_checkpoint(str(path), num_envs_per_env_runnr=1)


def test_restore_into_running_algorithm(saved: tuple[Algorithm, Path], algos: Algos) -> None:
    algo, path = saved
    other = algos.build(tiny_ppo().debugging(seed=7), iterations=2)
    assert other.iteration == 2
    before = other.get_weights()
    assert any(not np.array_equal(before[k], v) for k, v in algo.get_weights().items())
    other.restore(str(path))
    _assert_same_weights(other.get_weights(), algo.get_weights())
    assert other.iteration == 1
    assert other.counters == algo.counters
    obs = _observations(algo)
    np.testing.assert_array_equal(
        other.compute_actions(obs, explore=False), algo.compute_actions(obs, explore=False)
    )
    # The runner got the restored weights too.
    _assert_same_weights(other.env_runner.get_weights(), algo.get_weights())
    assert other.train()[m.TRAINING_ITERATION] == 2


def test_restore_refuses_checkpoint_of_another_algorithm(saved: tuple[Algorithm, Path]) -> None:
    algo, path = saved
    meta = _read_metadata(path)
    meta["algorithm"] = "DQN"
    _write_metadata(path, meta)
    with pytest.raises(ValueError, match="DQN"):
        algo.restore(str(path))


# ----------------------------------------------------------------- verification
@pytest.fixture
def load_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every payload file that training.checkpoints reads."""
    calls: list[str] = []
    real_load, real_json = safetensors.torch.load_file, safeio.read_json

    def load_file(path: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(Path(path).name)
        return real_load(path, *args, **kwargs)

    def read_json(path: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(Path(path).name)
        return real_json(path, *args, **kwargs)

    monkeypatch.setattr("training.checkpoints.load_file", load_file)
    monkeypatch.setattr("training.checkpoints.read_json", read_json)
    return calls


def _flip_byte(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x01
    file.write_bytes(bytes(data))


def test_tampered_module_detected_before_loading(
    saved: tuple[Algorithm, Path], algos: Algos, load_spy: list[str]
) -> None:
    _, path = saved
    module_file = path / "module.safetensors"
    size = module_file.stat().st_size
    _flip_byte(module_file, size - 5)  # inside the tensor data, the header stays valid
    assert module_file.stat().st_size == size
    with pytest.raises(CheckpointError) as info:
        Algorithm.from_checkpoint(str(path))
    message = str(info.value)
    assert "module.safetensors" in message
    assert "sha256" in message
    assert "learner_state" not in message  # only the bad file is named
    assert load_spy == []
    # restore() into a running algorithm fails the same way and changes nothing.
    other = algos.build(tiny_ppo().debugging(seed=3))
    before = other.get_weights()
    counters = dict(other.counters)
    with pytest.raises(CheckpointError, match=r"module\.safetensors"):
        other.restore(str(path))
    _assert_same_weights(other.get_weights(), before)
    assert other.counters == counters
    assert load_spy == []


def test_rejected_restore_keeps_iteration(saved: tuple[Algorithm, Path], algos: Algos) -> None:
    _, path = saved
    (path / "module.safetensors").unlink()
    other = algos.build(tiny_ppo().debugging(seed=3), iterations=2)
    with pytest.raises(CheckpointError, match=r"module\.safetensors"):
        other.restore(str(path))
    assert other.iteration == 2


def test_truncated_file_detected(saved: tuple[Algorithm, Path], load_spy: list[str]) -> None:
    _, path = saved
    file = path / "learner_state.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        Algorithm.from_checkpoint(str(path))
    assert "learner_state.safetensors" in str(info.value)
    assert "truncated" in str(info.value)
    assert str(len(data)) in str(info.value)
    assert load_spy == []


@pytest.mark.parametrize("name", ["algorithm_config.json", "learner_state.json"])
def test_missing_file_detected(
    saved: tuple[Algorithm, Path], load_spy: list[str], name: str
) -> None:
    _, path = saved
    (path / name).unlink()
    with pytest.raises(CheckpointError) as info:
        Algorithm.from_checkpoint(str(path))
    assert name in str(info.value)
    assert "missing" in str(info.value)
    assert load_spy == []


def test_missing_metadata_detected(saved: tuple[Algorithm, Path]) -> None:
    _, path = saved
    (path / "metadata.json").unlink()
    with pytest.raises(CheckpointError, match=r"metadata\.json"):
        Algorithm.from_checkpoint(str(path))


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a directory"):
        Algorithm.from_checkpoint(str(tmp_path / "nowhere"))


def test_newer_format_version_rejected(saved: tuple[Algorithm, Path], load_spy: list[str]) -> None:
    _, path = saved
    meta = _read_metadata(path)
    meta["format_version"] = "99.0"
    _write_metadata(path, meta)
    with pytest.raises(CheckpointVersionError) as info:
        Algorithm.from_checkpoint(str(path))
    assert "99.0" in str(info.value)
    assert CHECKPOINT_VERSION in str(info.value)
    assert isinstance(info.value, CheckpointError)
    assert load_spy == []


def test_newer_minor_version_still_loads(saved: tuple[Algorithm, Path], algos: Algos) -> None:
    algo, path = saved
    meta = _read_metadata(path)
    major = CHECKPOINT_VERSION.split(".")[0]
    meta["format_version"] = f"{major}.99"
    _write_metadata(path, meta)
    _assert_same_weights(algos.restore(path).get_weights(), algo.get_weights())


def test_wrong_format_name_rejected(saved: tuple[Algorithm, Path]) -> None:
    _, path = saved
    meta = _read_metadata(path)
    meta["format"] = "something-else"
    _write_metadata(path, meta)
    with pytest.raises(CheckpointError, match="something-else"):
        Algorithm.from_checkpoint(str(path))


def test_restore_never_unpickles(saved: tuple[Algorithm, Path], tmp_path: Path) -> None:
    algo, path = saved
    marker = tmp_path / "unpickled"
    (path / "_dict_checkpoint.pkl").write_bytes(pickle.dumps(_Reducer(str(marker))))
    with contextlib.suppress(Exception):  # only whether the pickle ran matters here
        algo.restore(str(path))
    assert not marker.exists()


class _Reducer:
    """Unpickling this creates the directory ``target`` (standing for arbitrary code)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.target,))


# ----------------------------------------------------------------- atomic saves
def test_crash_during_save_keeps_previous_checkpoint(
    algos: Algos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    algo = algos.build()
    parent = tmp_path / "checkpoints"
    path = parent / "ckpt"
    algo.save(str(path))
    saved_weights = algo.get_weights()
    saved_counters = dict(algo.counters)
    original_files = {p.name: p.read_bytes() for p in path.iterdir()}
    algo.train()
    assert algo.iteration == 2

    def crashing_save_file(tensors: dict[str, Any], filename: str, *args: Any) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("injected crash while writing " + Path(filename).name)

    monkeypatch.setattr("training.checkpoints.save_file", crashing_save_file)
    with pytest.raises(OSError, match="injected crash"):
        algo.save(str(path))
    monkeypatch.undo()

    assert {p.name: p.read_bytes() for p in path.iterdir()} == original_files
    assert sorted(p.name for p in parent.iterdir()) == ["ckpt"]  # no .tmp- / .old- leftovers
    restored = algos.restore(path)
    assert restored.iteration == 1
    assert restored.counters == saved_counters
    _assert_same_weights(restored.get_weights(), saved_weights)

    # A later save to the same path replaces it completely.
    algo.save(str(path))
    assert sorted(p.name for p in parent.iterdir()) == ["ckpt"]
    assert _read_metadata(path)["iteration"] == 2
    _assert_same_weights(algos.restore(path).get_weights(), algo.get_weights())


# ----------------------------------------------------------------- fresh process
CHILD = """
import hashlib, json, sys
import numpy as np
from training import Algorithm

algo = Algorithm.from_checkpoint(sys.argv[1])
obs = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
weights = algo.get_weights()
digest = hashlib.sha256()
for key in sorted(weights):
    digest.update(key.encode())
    digest.update(np.ascontiguousarray(weights[key]).tobytes())
print(json.dumps({
    "actions": algo.compute_actions(obs, explore=False).tolist(),
    "single": algo.compute_single_action(obs[0], explore=False),
    "digest": digest.hexdigest(),
    "iteration": algo.iteration,
    "sampled": algo.counters["num_env_steps_sampled_lifetime"],
}))
algo.stop()
"""


@pytest.mark.integration
def test_checkpoint_loads_in_fresh_process(saved: tuple[Algorithm, Path]) -> None:
    algo, path = saved
    obs = _observations(algo, 20)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), json.dumps(obs.tolist())],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    assert child["digest"] == _weights_digest(algo.get_weights())
    assert child["actions"] == algo.compute_actions(obs, explore=False).tolist()
    assert child["single"] == algo.compute_single_action(obs[0], explore=False)
    assert child["iteration"] == algo.iteration
    assert child["sampled"] == algo.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]


# ----------------------------------------------------------------- observation filter
def test_mean_std_filter_state_round_trip(algos: Algos, tmp_path: Path) -> None:
    algo = algos.build(tiny_ppo(observation_filter="MeanStdFilter"), iterations=2)
    path = tmp_path / "ckpt"
    algo.save(str(path))
    assert (path / "filter_state.json").is_file()
    meta = _read_metadata(path)
    assert "filter_state.json" in meta["files"]
    filter_state = json.loads((path / "filter_state.json").read_text())
    assert filter_state == algo.filter_stat.to_json()

    restored = algos.restore(path)
    obs = _observations(algo)
    expected = algo.get_policy().preprocess(obs)
    # The filter really normalises (otherwise the comparison below proves little).
    assert not np.allclose(expected, obs.astype(np.float32))
    np.testing.assert_array_equal(restored.get_policy().preprocess(obs), expected)
    assert restored.filter_stat.to_json() == algo.filter_stat.to_json()
    np.testing.assert_array_equal(
        restored.compute_actions(obs, explore=False), algo.compute_actions(obs, explore=False)
    )
    assert restored.train()[m.TRAINING_ITERATION] == 3


# ----------------------------------------------------------------- saves outside Tune
def test_crash_during_first_save_leaves_no_directory(
    algos: Algos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target appears only complete: a save that dies never leaves it empty or partial."""
    algo = algos.build()
    run_dir = tmp_path / "run"
    seen: list[bool] = []

    def crashing_save_file(tensors: dict[str, Any], filename: str, *args: Any) -> None:
        seen.append(os.path.lexists(run_dir / "checkpoint_000001"))
        raise OSError("injected crash while writing " + Path(filename).name)

    monkeypatch.setattr("training.checkpoints.save_file", crashing_save_file)
    with pytest.raises(OSError, match="injected crash"):
        algo.save(str(run_dir / "checkpoint_000001"))
    assert seen == [False]  # not even created while its files were being written
    assert list(run_dir.iterdir()) == []
    monkeypatch.undo()
    result = algo.save(str(run_dir / "checkpoint_000001"))
    assert result.checkpoint.path == str(run_dir / "checkpoint_000001")
    assert result.metrics[m.TRAINING_ITERATION] == 1  # Trainable.save's metrics, as before
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint_000001"]


# ----------------------------------------------------------------- run directories
@pytest.fixture
def run_dir(algos: Algos, tmp_path: Path) -> Path:
    """A run directory with good checkpoints at iterations 1 and 2 (as ``rlserve train``)."""
    algo = algos.build()
    root = tmp_path / "run"
    algo.save(str(root / "checkpoint_000001"))
    algo.train()
    algo.save(str(root / "checkpoint_000002"))
    return root


def _copy(run_dir: Path, name: str, source: str = "checkpoint_000002") -> Path:
    target = run_dir / name
    shutil.copytree(run_dir / source, target)
    return target


def _claim_iteration(path: Path, iteration: int) -> None:
    """Make a copied checkpoint claim a later iteration (metadata.json lists no own hash)."""
    meta = _read_metadata(path)
    meta["iteration"] = iteration
    _write_metadata(path, meta)


def test_latest_checkpoint_skips_empty_partial_and_tampered(
    run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (run_dir / "checkpoint_000003").mkdir()  # empty, as Trainable.save used to leave it
    partial = _copy(run_dir, "checkpoint_000004")  # payload written, metadata not yet
    (partial / "metadata.json").unlink()
    truncated = _copy(run_dir, "checkpoint_000005")
    _claim_iteration(truncated, 5)
    with (truncated / "module.safetensors").open("r+b") as file:
        file.truncate(100)
    tampered = _copy(run_dir, "checkpoint_000006")
    _claim_iteration(tampered, 6)
    _flip_byte(tampered / "learner_state.safetensors", 200)
    # Hidden siblings of the atomic writer are never candidates (nor warned about).
    (run_dir / ".checkpoint_000007.tmp-0123456789ab").mkdir()
    (run_dir / "results.jsonl").write_text("")

    path, skipped = find_latest_checkpoint(run_dir)
    assert path == run_dir / "checkpoint_000002"
    assert [s.path.name for s in skipped] == [
        "checkpoint_000006",
        "checkpoint_000005",
        "checkpoint_000004",
        "checkpoint_000003",
    ]
    reasons = [s.reason for s in skipped]
    assert "'learner_state.safetensors' has sha256" in reasons[0]
    assert "'module.safetensors' is 100 bytes" in reasons[1]
    assert "metadata.json is missing" in reasons[2] and "metadata.json is missing" in reasons[3]
    assert all(str(run_dir) not in reason for reason in reasons)  # the path is named once

    with caplog.at_level(logging.WARNING, logger="training.run_directory"):
        assert latest_checkpoint(run_dir) == run_dir / "checkpoint_000002"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert all("\n" not in line and line.startswith("skipping checkpoint ") for line in lines)
    assert f"skipping checkpoint {run_dir / 'checkpoint_000003'}: " in lines[3]


def test_latest_checkpoint_is_the_highest_iteration_that_verifies(run_dir: Path) -> None:
    final = _copy(run_dir, "checkpoint_final")  # iteration 2, as the numbered one
    later_ns = (run_dir / "checkpoint_000002").stat().st_mtime_ns + 10**9
    os.utime(final, ns=(later_ns, later_ns))
    assert find_latest_checkpoint(run_dir) == (final, [])  # a tie: the later-written one
    shutil.rmtree(final)
    later = _copy(run_dir, "checkpoint_final", source="checkpoint_000001")
    _claim_iteration(later, 9)
    assert find_latest_checkpoint(run_dir) == (later, [])  # by iteration, not by name
    # A checkpoint_final that cannot say its iteration is tried first, and reported.
    shutil.rmtree(later)
    (run_dir / "checkpoint_final").mkdir()
    path, skipped = find_latest_checkpoint(run_dir)
    assert path == run_dir / "checkpoint_000002"
    assert [s.path.name for s in skipped] == ["checkpoint_final"]


def test_latest_checkpoint_reports_a_symlink_without_following_it(run_dir: Path) -> None:
    (run_dir / "checkpoint_000009").symlink_to(run_dir / "checkpoint_000002")
    path, skipped = find_latest_checkpoint(run_dir)
    assert path == run_dir / "checkpoint_000002"
    assert [(s.path.name, s.reason) for s in skipped] == [
        ("checkpoint_000009", "is a symbolic link; links are not used")
    ]


def test_run_directory_without_a_verifying_checkpoint_is_one_error(tmp_path: Path) -> None:
    root = tmp_path / "run"
    (root / "checkpoint_000001").mkdir(parents=True)
    (root / "checkpoint_000002").mkdir()
    (root / "checkpoint_000002" / "metadata.json").write_text("{not json")
    with pytest.raises(CheckpointError) as caught:
        Algorithm.from_checkpoint(root)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"run directory {root}: no checkpoint verifies (")
    assert "checkpoint_000002: cannot read metadata.json" in message
    assert "checkpoint_000001: metadata.json is missing" in message
    assert isinstance(caught.value, RlserveError)  # the CLI's error boundary: exit 2

    shutil.rmtree(root / "checkpoint_000001")
    shutil.rmtree(root / "checkpoint_000002")
    with pytest.raises(CheckpointError, match="holds no checkpoint_"):
        find_latest_checkpoint(root)
    with pytest.raises(CheckpointError, match=r"metadata\.json is missing"):
        Algorithm.from_checkpoint(root)  # no checkpoint_* inside: read as a checkpoint dir
    with pytest.raises(CheckpointError, match="not a directory"):
        find_latest_checkpoint(tmp_path / "nowhere")


def test_from_checkpoint_and_restore_accept_a_run_directory(
    run_dir: Path, algos: Algos, caplog: pytest.LogCaptureFixture
) -> None:
    (run_dir / "checkpoint_000003").mkdir()
    assert is_run_directory(run_dir)
    assert not is_run_directory(run_dir / "checkpoint_000002")
    assert resolve_checkpoint(run_dir / "checkpoint_000003") == (
        run_dir / "checkpoint_000003",
        [],
    )  # a checkpoint dir is taken as given (and fails to load as today)
    with caplog.at_level(logging.WARNING, logger="training"):
        restored = algos.restore(run_dir)
    assert restored.iteration == 2
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"skipping checkpoint {run_dir / 'checkpoint_000003'}"
    ]
    other = algos.build(iterations=0)
    other.restore(str(run_dir))
    assert other.iteration == 2
    _assert_same_weights(other.get_weights(), restored.get_weights())
    assert restored.train()[m.TRAINING_ITERATION] == 3
