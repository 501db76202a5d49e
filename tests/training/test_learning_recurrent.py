"""The recurrent policies' learning run (``learning`` marker), in a file of its own so that
``make test``'s two workers can run it beside ``test_learning.py`` (files stay on one worker).
"""

from __future__ import annotations

import pytest

from training import metrics as m
from training.tuned_examples import load_tuned_example

pytestmark = pytest.mark.learning


@pytest.mark.timeout(240)
def test_an_lstm_remembers_what_stateless_cartpole_hides() -> None:
    """PPO with an LSTM reaches a mean training return of 350 within 500k env steps on
    CartPole without velocities (RLlib's bar: 350 within 2M); without the LSTM the same
    settings cannot (they stay near 45: the position and angle alone do not say where the
    pole is going). Seed 0 reaches 350 at ~266k env steps.
    """

    def curve(use_lstm: bool, max_steps: int) -> list[tuple[int, float]]:
        config = load_tuned_example("stateless_cartpole_lstm_ppo").config.debugging(seed=0)
        if not use_lstm:
            config.training(model={**config.model.model_dump(), "use_lstm": False})
        points: list[tuple[int, float]] = []
        with config.build() as algo:
            while True:
                result = algo.train()
                steps = int(result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME])
                ret = float(result[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN])
                points.append((steps, round(ret, 1)))
                if ret >= 350 or steps >= max_steps:
                    return points

    with_lstm = curve(True, 500_000)
    assert with_lstm[-1][1] >= 350, with_lstm[::10]
    without = curve(False, 150_000)
    print(f"\nLSTM: {with_lstm[::10]}\nfeed-forward: {without[::10]}")
    assert max(ret for _, ret in without) < 100, without[::10]
