"""rlserve.jobs.results: the results.jsonl, progress.csv and TensorBoard files of a training run."""

from __future__ import annotations

import csv
import json
import math
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlserve.jobs.results import ResultLogger, flatten_result
from tests.helpers.tfevents import crc32c, read_events, read_scalars


def _result(iteration: int, steps: int, ret: float, **extra: Any) -> dict[str, Any]:
    return {
        "env_runners": {"episode_return_mean": ret, "num_episodes": np.int64(iteration)},
        "learners": {"default_policy": {"vf_loss": np.float32(0.5 * iteration)}},
        "num_env_steps_sampled_lifetime": steps,
        "done": False,
        "training_iteration": iteration,
        "date": f"2026-01-0{iteration}",
        "pid": 123,
        "timestamp": 1_700_000_000 + iteration,
        "histogram": [1.0, 2.0],
        "config": {"lr": 0.001, "model": {"fcnet_hiddens": [64, 64]}},
        **extra,
    }


FIRST = _result(1, 128, math.nan)
SECOND = _result(
    2, 256, 21.5, evaluation={"env_runners": {"episode_return_mean": 30.0}}, extra_flag=True
)
FIRST_COLUMNS = [
    "env_runners/episode_return_mean",
    "env_runners/num_episodes",
    "learners/default_policy/vf_loss",
    "num_env_steps_sampled_lifetime",
    "done",
    "training_iteration",
    "date",
    "pid",
    "timestamp",
]


def _csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def test_flatten_result_keeps_scalars_without_config() -> None:
    flat = flatten_result(SECOND)
    assert list(flat) == [
        *FIRST_COLUMNS,
        "evaluation/env_runners/episode_return_mean",
        "extra_flag",
    ]
    assert type(flat["env_runners/num_episodes"]) is int
    assert type(flat["learners/default_policy/vf_loss"]) is float
    assert flat["extra_flag"] is True


def test_two_results_give_csv_rows_jsonl_lines_and_tensorboard_scalars(tmp_path: Path) -> None:
    with ResultLogger(tmp_path / "run") as logger:
        logger.log(FIRST)
        logger.log(SECOND)
    run = tmp_path / "run"

    # The header grew when the second result brought new keys; row 1 leaves them empty.
    assert _csv(run / "progress.csv") == [
        [*FIRST_COLUMNS, "evaluation/env_runners/episode_return_mean", "extra_flag"],
        ["nan", "1", "0.5", "128", "False", "1", "2026-01-01", "123", "1700000001", "", ""],
        [
            "21.5",
            "2",
            "1.0",
            "256",
            "False",
            "2",
            "2026-01-02",
            "123",
            "1700000002",
            "30.0",
            "True",
        ],
    ]
    assert not list(run.glob(".*.tmp")), "the temporary CSV was left behind"

    lines = (run / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert math.isnan(first["env_runners"]["episode_return_mean"])
    assert first["config"]["model"]["fcnet_hiddens"] == [64, 64]
    assert json.loads(lines[1])["evaluation"]["env_runners"]["episode_return_mean"] == 30.0

    (events_file,) = run.glob("events.out.tfevents.*")
    assert read_events(events_file)[0].file_version == "brain.Event:2"
    (step1, scalars1), (step2, scalars2) = read_scalars(events_file)
    assert (step1, step2) == (128, 256)  # the step is num_env_steps_sampled_lifetime
    # NaN, booleans, strings, lists, config, pid and timestamp are left out.
    assert scalars1 == {
        "env_runners/num_episodes": 1.0,
        "learners/default_policy/vf_loss": 0.5,
        "num_env_steps_sampled_lifetime": 128.0,
        "training_iteration": 1.0,
    }
    assert scalars2 == {
        "env_runners/episode_return_mean": 21.5,
        "env_runners/num_episodes": 2.0,
        "learners/default_policy/vf_loss": 1.0,
        "num_env_steps_sampled_lifetime": 256.0,
        "training_iteration": 2.0,
        "evaluation/env_runners/episode_return_mean": 30.0,
    }


def test_every_result_is_on_disk_before_close(tmp_path: Path) -> None:
    logger = ResultLogger(tmp_path)
    try:
        logger.log(FIRST)
        logger.log(_result(2, 256, 10.0))  # same keys: appended, not rewritten
        assert len(_csv(tmp_path / "progress.csv")) == 3
        assert (tmp_path / "results.jsonl").read_text().count("\n") == 2
        assert [step for step, _ in read_scalars(logger.events_path)] == [128, 256]
    finally:
        logger.close()
    logger.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        logger.log(FIRST)


def test_a_second_logger_continues_the_run_directory(tmp_path: Path) -> None:
    with ResultLogger(tmp_path) as logger:
        logger.log(FIRST)
    with ResultLogger(tmp_path) as logger:
        logger.log(SECOND)
    rows = _csv(tmp_path / "progress.csv")
    assert rows[0][-2:] == ["evaluation/env_runners/episode_return_mean", "extra_flag"]
    assert [row[FIRST_COLUMNS.index("training_iteration")] for row in rows[1:]] == ["1", "2"]
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 2
    files = sorted(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 2  # one per logger, even when both start in the same second
    assert sorted(step for f in files for step, _ in read_scalars(f)) == [128, 256]


@pytest.fixture()
def default_sigint() -> Iterator[None]:
    """Python's own Ctrl-C handler, as in `rlserve train` (an in-process Ray may replace it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_logging_is_delivered_after_every_file_has_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_sigint: None
) -> None:
    logger = ResultLogger(tmp_path)
    csv_file = logger._csv
    write = csv_file.write

    def interrupted_write(row: Any) -> None:
        signal.raise_signal(signal.SIGINT)  # Ctrl-C between results.jsonl and progress.csv
        write(row)

    monkeypatch.setattr(csv_file, "write", interrupted_write)
    try:
        with pytest.raises(KeyboardInterrupt):
            logger.log(FIRST)
    finally:
        logger.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert len(_csv(tmp_path / "progress.csv")) == 2
    assert [step for step, _ in read_scalars(logger.events_path)] == [128]


def test_the_test_reader_checks_crcs(tmp_path: Path) -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    with ResultLogger(tmp_path) as logger:
        logger.log(FIRST)
    blob = bytearray(logger.events_path.read_bytes())
    blob[-6] ^= 0xFF  # flip a byte inside the last record's data
    logger.events_path.write_bytes(bytes(blob))
    with pytest.raises(AssertionError, match="bad data CRC"):
        read_events(logger.events_path)
