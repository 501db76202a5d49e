"""The training progress display: figures, ETAs per stop criterion, live vs line output."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
from rich.console import Console

from rlserve.jobs.progress import TrainingProgress, metric

RETURN = "env_runners/episode_return_mean"
STEPS = "num_env_steps_sampled_lifetime"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def result(iteration: int, steps: int, ret: float, iter_steps: int = 1000) -> dict[str, Any]:
    return {
        "training_iteration": iteration,
        STEPS: steps,
        "num_env_steps_sampled": iter_steps,
        "env_runners": {"episode_return_mean": ret},
    }


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


def test_metric_reads_nested_numbers_and_nan_otherwise() -> None:
    r = result(3, 3000, 42.5)
    assert metric(r, RETURN) == 42.5
    assert metric(r, STEPS) == 3000
    assert math.isnan(metric(r, "env_runners/missing"))
    assert math.isnan(metric({"a": "text"}, "a"))


def test_step_and_iteration_etas_extrapolate_this_runs_rate() -> None:
    clock = Clock()
    con, out = console(terminal=False)
    stop = {STEPS: 10_000.0, "training_iteration": 20.0}
    with TrainingProgress(con, stop, clock=clock) as progress:
        clock.now += 2.0
        progress.update(result(1, 1000, 20.0))
        clock.now += 2.0
        progress.update(result(2, 2000, 30.0))
    assert progress.steps_per_s == pytest.approx(500.0)
    steps, iters = progress.criteria()
    assert steps.eta_s == pytest.approx(8000 / 500)
    assert steps.fraction == pytest.approx(0.2)
    assert iters.eta_s == pytest.approx(18 * 2.0)
    assert progress.eta_s() == pytest.approx(16.0)  # the first criterion to be met
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # one plain line per iteration off a terminal
    assert lines[-1].split() == [
        "iter", "2", "steps", "2000", "return", "30.00", "500", "steps/s", "4.0s", "eta", "16s"
    ]  # fmt: skip


def test_resumed_run_counts_rates_from_its_own_start() -> None:
    clock = Clock()
    con, _ = console(terminal=False)
    with TrainingProgress(con, {STEPS: 60_000.0, "training_iteration": 60.0}, clock=clock) as p:
        clock.now += 1.0
        p.update(result(51, 51_000, 400.0))  # a checkpoint at 50 iterations, 50k steps
    assert p.steps_per_s == pytest.approx(1000.0)
    steps, iters = p.criteria()
    assert steps.eta_s == pytest.approx(9.0)
    assert iters.eta_s == pytest.approx(9.0)


def test_return_eta_follows_the_recent_slope_and_is_marked_approximate() -> None:
    clock = Clock()
    con, out = console(terminal=False)
    with TrainingProgress(con, {RETURN: 450.0}, clock=clock) as progress:
        assert progress.eta_s() is None
        for i, ret in enumerate([100.0, 150.0, 200.0, 250.0], start=1):
            clock.now += 1.0
            progress.update(result(i, 1000 * i, ret))
    (status,) = progress.criteria()
    assert status.estimated
    assert status.eta_s == pytest.approx(4.0)  # 50 per second, 200 to go
    assert status.fraction == pytest.approx(250 / 450)
    assert out.getvalue().splitlines()[-1].endswith("eta ~4s")


def test_return_eta_is_unknown_while_the_return_falls_and_zero_once_met() -> None:
    clock = Clock()
    con, _ = console(terminal=False)
    with TrainingProgress(con, {RETURN: 450.0}, clock=clock) as progress:
        for i, ret in enumerate([300.0, 200.0], start=1):
            clock.now += 1.0
            progress.update(result(i, 1000 * i, ret))
        assert progress.eta_s() is None
        clock.now += 1.0
        progress.update(result(3, 3000, 460.0))
        assert progress.eta_s() == 0.0
        assert progress.criteria()[0].fraction == 1.0


def test_live_display_draws_headline_and_a_bar_per_criterion() -> None:
    clock = Clock()
    con, out = console(terminal=True)
    stop = {RETURN: 450.0, STEPS: 100_000.0}
    with TrainingProgress(con, stop, clock=clock) as progress:
        assert progress.live
        clock.now += 5.0
        progress.update(result(1, 25_000, 123.4, iter_steps=25_000))
    text = out.getvalue()
    for expected in (
        "iteration 1",
        "env steps 25,000",
        "return 123.4",
        "steps/s 5,000",
        "ETA 15s",
        "mean return",
        "123.4 / 450",
        "25,000 / 100,000",
        "eta 15s",
        "━",
    ):
        assert expected in text, (expected, text)
    assert "\n" + "iter " not in text  # no plain progress lines on a terminal
