"""The Coalescer: what is submitted in one event-loop pass is answered by one graph call."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.batching import Coalescer, Item, compute_batch
from serving.observations import ObservationError
from serving.runtime import PolicyRuntime

OBS = [[0.01 * i, -0.02, 0.03, 0.04] for i in range(10)]


@pytest.fixture(scope="module")
def runtime(cartpole_artifact: Path) -> PolicyRuntime:
    return PolicyRuntime.from_path(cartpole_artifact)


def alone(runtime: PolicyRuntime, obs: Any, explore: bool, seed: int | None) -> Any:
    leaves = [np.asarray([obs], np.float32)]
    return runtime.compute(leaves, explore=explore, seed=seed)


def test_one_pass_is_one_call_with_each_request_sampled_as_alone(runtime: PolicyRuntime) -> None:
    calls: list[int] = []

    async def run() -> list[Any]:
        coalescer = Coalescer(64, record=lambda rt, start, requests: calls.append(requests))
        return await asyncio.gather(
            *(coalescer.observation(runtime, obs, True, seed) for seed, obs in enumerate(OBS))
        )

    answers = asyncio.run(run())
    assert calls == [len(OBS)]
    for seed, (obs, answer) in enumerate(zip(OBS, answers, strict=True)):
        expected = alone(runtime, obs, True, seed)
        assert answer.batched_requests == len(OBS)
        np.testing.assert_array_equal(answer.actions, expected.actions)
        np.testing.assert_allclose(answer.action_dist_inputs, expected.action_dist_inputs, 1e-6)


def test_a_bad_observation_fails_alone(runtime: PolicyRuntime) -> None:
    async def run() -> list[Any]:
        coalescer = Coalescer()
        observations: list[Any] = [OBS[0], [1.0, 2.0], OBS[2], [0, 0, 0, float("nan")]]
        return await asyncio.gather(
            *(coalescer.observation(runtime, obs, False, None) for obs in observations),
            return_exceptions=True,
        )

    good_a, bad_shape, good_b, bad_nan = asyncio.run(run())
    assert isinstance(bad_shape, ObservationError)
    assert str(bad_shape) == "observation: expected shape (4,), got (2,)"
    assert isinstance(bad_nan, ObservationError) and "NaN" in str(bad_nan)
    assert good_a.batched_requests == good_b.batched_requests == 2
    assert int(good_b.actions[0]) == int(alone(runtime, OBS[2], False, None).actions[0])


def test_batches_are_capped_and_the_rest_go_next(runtime: PolicyRuntime) -> None:
    calls: list[int] = []

    async def run() -> None:
        coalescer = Coalescer(4, record=lambda rt, start, requests: calls.append(requests))
        leaves = [np.asarray([OBS[0]], np.float32)]
        await asyncio.gather(
            *(coalescer(runtime, leaves, False, None) for _ in range(5)),
            *(coalescer.observation(runtime, OBS[1], False, None) for _ in range(5)),
        )

    asyncio.run(run())
    assert calls == [4, 4, 2]


def test_compute_batch_keeps_each_requests_rows(runtime: PolicyRuntime) -> None:
    two = [np.asarray(OBS[:2], np.float32)]
    one = [np.asarray(OBS[2:3], np.float32)]
    first, second = compute_batch(
        [Item(runtime, two, False, None), Item(runtime, one, False, None)]
    )
    assert first.actions.shape == (2,) and second.actions.shape == (1,)
    np.testing.assert_array_equal(
        np.concatenate([first.actions, second.actions]),
        runtime.compute([np.asarray(OBS[:3], np.float32)]).actions,
    )
