"""A recurrent (LSTM) policy served: client-carried state over HTTP, server-held over sessions.

The reference is the training library's own ``compute_single_action`` on the checkpoint the
artifact was exported from: every served answer must carry the same memory, step by step.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from serving import PolicyRegistry, PolicyRuntime, ServingSettings, create_app, wire
from serving.answers import BadRequestError
from serving.batching import Coalescer
from serving.client import AsyncPolicyClient, PolicyClient, play_episodes
from serving.session_client import PolicySession, SessionClosedError, play_session_episodes
from serving.sessions import SessionSettings
from tests.helpers.policies import TinyPolicies
from tests.helpers.threaded_server import ThreadedServer
from training.example_envs import StatelessCartPole

CELLS = 8
ATOL = 1e-5


@pytest.fixture(scope="module")
def lstm(tiny_policies: TinyPolicies) -> tuple[Path, Path]:
    """The tiny LSTM policy's checkpoint and its ONNX artifact."""
    return tiny_policies.checkpoint("lstm"), tiny_policies.artifact("lstm", ["onnx"])


def policy_of(checkpoint: Path) -> Any:
    """A checkpoint's policy, as training runs it (torch, no Ray)."""
    import torch

    from training.checkpoints import load_module
    from training.policy import Policy

    module, _ = load_module(checkpoint)
    return Policy(module, torch.device("cpu"), explore_default=False)


@pytest.fixture(scope="module")
def reference(lstm: tuple[Path, Path]) -> Any:
    """The LSTM checkpoint's policy (the reference every served answer must match)."""
    return policy_of(lstm[0])


def rollout(steps: int, seed: int) -> list[list[float]]:
    """Observations of StatelessCartPole under alternating actions (the same for every caller)."""
    env = StatelessCartPole()
    obs, _ = env.reset(seed=seed)
    observations = []
    for step in range(steps):
        observations.append(obs.tolist())
        obs, _, terminated, truncated, _ = env.step(step % 2)
        if terminated or truncated:
            obs, _ = env.reset()
    return observations


def expected(reference: Any, observations: list[Any]) -> list[tuple[int, list[np.ndarray]]]:
    """``compute_single_action``'s action and next state at each step, from the initial state."""
    state = reference.get_initial_state()
    answers = []
    for obs in observations:
        action, state, _ = reference.compute_single_action(
            np.asarray(obs, np.float32), state=state, explore=False
        )
        answers.append((action, [np.asarray(s) for s in state]))
    return answers


def assert_state(got: Any, want: list[np.ndarray]) -> None:
    assert len(got) == len(want) == 2
    for part, ref in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(part, np.float32), ref, rtol=1e-4, atol=ATOL)


# ------------------------------------------------------------------ runtime and HTTP
def test_the_runtime_takes_and_returns_the_state(lstm: tuple[Path, Path], reference: Any) -> None:
    runtime = PolicyRuntime.from_path(lstm[1])
    assert runtime.is_recurrent and [s.input for s in runtime.state_specs] == [
        "state_in_h",
        "state_in_c",
    ]
    observations = rollout(30, seed=3)
    state = None
    for obs, (action, want) in zip(observations, expected(reference, observations), strict=True):
        batch = runtime.compute([np.asarray([obs], np.float32)], state=state)
        assert int(batch.actions[0]) == action
        assert batch.state is not None
        assert_state([s[0] for s in batch.state], want)
        state = batch.state
    # The state is memory the answer depends on: the same observation from the initial state
    # is answered otherwise.
    fresh = runtime.compute([np.asarray([observations[-1]], np.float32)])
    assert not np.allclose(fresh.action_dist_inputs, batch.action_dist_inputs, atol=1e-4)


@pytest.fixture()
def app(lstm: tuple[Path, Path], cartpole_artifact: Path) -> Any:
    registry = PolicyRegistry.from_paths({"lstm": lstm[1], "cartpole": cartpole_artifact})
    return create_app(registry, ServingSettings(max_rows=16, max_body_bytes=64 * 1024))


def test_http_carries_the_state_from_answer_to_request(app: Any, reference: Any) -> None:
    observations = rollout(40, seed=1)
    want = expected(reference, observations)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with AsyncPolicyClient("http://rlserve.test", transport=transport) as client:
            described = await client.policy("lstm")
            assert described["recurrent"] is True
            assert [(s["input"], s["output"], s["shape"]) for s in described["state"]] == [
                ("state_in_h", "state_out_h", ["batch", CELLS]),
                ("state_in_c", "state_out_c", ["batch", CELLS]),
            ]
            plain = await client.policy("cartpole")
            assert plain["recurrent"] is False and plain["state"] is None
            state = None
            for obs, (action, ref_state) in zip(observations, want, strict=True):
                answer = await client.compute_action("lstm", obs, state=state)
                assert answer.action == action
                assert_state(answer.state, ref_state)
                state = answer.state
            # A batch carries one state row per observation: three agents at different steps.
            rows = [None, want[4][1], want[9][1]]
            batch_state = [
                [np.zeros(CELLS).tolist() if r is None else r[k].tolist() for r in rows]
                for k in range(2)
            ]
            obs_rows = [observations[0], observations[5], observations[10]]
            batch = await client.compute_actions("lstm", obs_rows, state=batch_state)
            assert batch.actions == [want[0][0], want[5][0], want[10][0]]
            assert batch.state is not None
            for row, step in enumerate((0, 5, 10)):
                assert_state([batch.state[0][row], batch.state[1][row]], want[step][1])
            # A feed-forward policy answers without a state.
            assert (await client.compute_action("cartpole", [0.0] * 4)).state is None

    asyncio.run(scenario())


BAD_STATES: list[tuple[str, Any, int, str]] = [
    ("lstm", "not a list", 422, "state"),
    ("lstm", [[0.0] * CELLS], 422, "a list of 2 arrays (state_in_h, state_in_c)"),
    ("lstm", [[0.0] * CELLS, [0.0] * (CELLS - 1)], 422, "state[1] (state_in_c): expected shape"),
    ("lstm", [[0.0] * CELLS, [[0.0] * CELLS]], 422, "expected shape [8], got [1, 8]"),
    ("lstm", [[0.0] * CELLS, ["a"] * CELLS], 422, "state[1] (state_in_c): expected numbers"),
    ("lstm", [[0.0] * CELLS, [1e39] * CELLS], 422, "expected finite numbers"),
    ("lstm", [[0.0] * CELLS, [True] * CELLS], 422, "state[1][0]: expected a number"),
    ("lstm", [[0.0] * CELLS, [{"h": 1}] * CELLS], 422, "expected numbers"),
    ("cartpole", [[0.0] * CELLS] * 2, 422, "feed-forward and takes no state"),
]


@pytest.mark.parametrize(("policy", "state", "status", "detail"), BAD_STATES)
def test_a_bad_state_is_refused_naming_it(
    app: Any, policy: str, state: Any, status: int, detail: str
) -> None:
    obs = [0.01, 0.02] if policy == "lstm" else [0.0] * 4

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            one = await client.post(
                wire.action_path(policy), json={"observation": obs, "state": state}
            )
            assert one.status_code == status and detail in one.json()["detail"], one.text

    asyncio.run(scenario())


def test_a_recurrent_policy_refuses_npy_bodies_over_http(app: Any) -> None:
    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(
                wire.actions_path("lstm"),
                content=_npy(np.zeros((2, 2), np.float32)),
                headers={"content-type": wire.NPY},
            )

    answer = asyncio.run(scenario())
    assert answer.status_code == 415 and "recurrent" in answer.json()["detail"]


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=_JSON, batch=st.booleans())
def test_no_state_a_client_sends_is_a_server_error(
    lstm: tuple[Path, Path], state: Any, batch: bool
) -> None:
    app = create_app(PolicyRegistry.from_paths({"lstm": lstm[1]}))
    if batch:
        path, body = wire.actions_path("lstm"), {"observations": [[0.0, 0.1]] * 2, "state": state}
    else:
        path, body = wire.action_path("lstm"), {"observation": [0.0, 0.1], "state": state}

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(
                path, content=json.dumps(body), headers={"content-type": wire.JSON}
            )

    answer = asyncio.run(scenario())
    assert answer.status_code in (200, 400, 422), answer.text
    if answer.status_code == 200:
        assert len(answer.json()["state"]) == 2


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# ------------------------------------------------------------------ sessions
class Served:
    """The app on uvicorn in a thread, counting the requests of each batched graph call."""

    def __init__(self, artifact: Path, sessions: SessionSettings) -> None:
        self.calls: list[int] = []
        coalescer = Coalescer(
            64, record=lambda runtime, start, requests: self.calls.append(requests)
        )
        registry = PolicyRegistry.from_paths({"lstm": artifact})
        self.server = ThreadedServer(
            create_app(registry, sessions=sessions, session_infer=coalescer)
        )
        self.http = self.server.http
        self.ws = self.server.ws + wire.session_path("lstm")


@pytest.fixture(scope="module")
def served(lstm: tuple[Path, Path]) -> Iterator[Served]:
    running = Served(lstm[1], SessionSettings(max_agents=4))
    yield running
    running.server.stop()


def test_a_session_holds_each_agents_state_in_its_own_order(served: Served, reference: Any) -> None:
    """Three agents' steps sent interleaved, all at once: each agent's answers carry its own
    memory (as compute_single_action along its own episode), and the steps of different
    agents share graph calls."""
    episodes = {"npc-1": rollout(12, seed=10), 7: rollout(12, seed=11), None: rollout(12, seed=12)}
    want = {agent: expected(reference, obs) for agent, obs in episodes.items()}
    served.calls.clear()
    with connect(served.ws) as ws:
        order: list[tuple[Any, int]] = []
        for step in range(12):
            for agent, observations in episodes.items():
                message: dict[str, Any] = {"observation": observations[step], "id": len(order)}
                if agent is not None:
                    message["agent"] = agent
                ws.send(json.dumps(message))
                order.append((agent, step))
        for agent, step in order:
            answer = json.loads(ws.recv())
            assert answer["action"] == want[agent][step][0], (agent, step, answer)
            assert answer["steps"] == step + 1
    assert sum(served.calls) == 36 and max(served.calls) > 1  # agents batched together


def test_resets_start_agents_afresh(served: Served, reference: Any) -> None:
    observations = rollout(6, seed=4)
    want = expected(reference, observations)
    with PolicySession(served.http, "lstm") as session:
        for obs in observations[:3]:
            session.compute_action([4.0, 0.4], agent="a")  # a history that is not this one
            session.compute_action(obs, agent="b")
        # "a" starts its episode with this step; "b" goes on.
        first = session.compute_action(observations[0], agent="a", reset=True)
        assert first.action == want[0][0]
        assert session.compute_action(observations[3], agent="b").action == want[3][0]
        session.reset("b")
        assert session.compute_action(observations[0], agent="b").action == want[0][0]
        session.reset(everyone=True)
        for agent in ("a", "b"):
            assert session.compute_action(observations[0], agent=agent).action == want[0][0]
        # The session's limit of agents (4 here): a fifth is refused, clearly, until a reset.
        session.compute_action(observations[0], agent="c")
        session.compute_action(observations[0], agent="d")
        with pytest.raises(BadRequestError, match="at most 4") as refused:
            session.compute_action(observations[0], agent="e")
        assert refused.value.status == 413
        session.reset("a")
        session.compute_action(observations[0], agent="e")


def test_session_batches_and_npy_frames(served: Served, reference: Any) -> None:
    observations = rollout(4, seed=6)
    want = expected(reference, observations)
    with PolicySession(served.http, "lstm") as session:
        for step in range(4):
            batch = session.compute_actions([observations[step]] * 2, agents=["x", "y"])
            assert batch.actions == [want[step][0]] * 2
        with pytest.raises(BadRequestError, match="agents: policy 'lstm' is recurrent"):
            session.compute_actions([observations[0]] * 2)
        with pytest.raises(BadRequestError, match="appears twice"):
            session.compute_actions([observations[0]] * 2, agents=["x", "x"])
        # One .npy observation per message: the session's own agent.
        for step in range(4):
            action = session.compute_actions_npy(np.asarray(observations[step], np.float32))
            assert int(action) == want[step][0]
        with pytest.raises(BadRequestError, match="needs its rows' agents") as refused:
            session.compute_actions_npy(np.zeros((2, 2), np.float32))
        assert refused.value.status == 415
    # A new session starts every agent from the initial state.
    with PolicySession(served.http, "lstm") as session:
        answer = session.compute_action(observations[0], agent="x")
        assert answer.action == want[0][0]


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        ({"observation": [0.0, 0.0], "agent": True}, "agent"),
        ({"observation": [0.0, 0.0], "agent": "x" * 257}, "agent"),
        ({"observation": [0.0, 0.0], "agent": 2**64}, "agent"),
        ({"observation": [0.0, 0.0], "reset": "yes"}, "reset"),
        ({"reset": False}, "reset"),
        ({"reset": True, "agents": ["a"]}, "agents"),
        ({"observation": [0.0, 0.0], "state": [[0.0] * CELLS] * 2}, "state"),
    ],
)
def test_bad_agent_fields_are_answered_and_the_session_goes_on(
    served: Served, message: dict[str, Any], detail: str
) -> None:
    with connect(served.ws) as ws:
        ws.send(json.dumps(message))
        error = json.loads(ws.recv())["error"]
        assert error["status"] == 422 and detail in error["detail"], error
        ws.send(json.dumps({"observation": [0.0, 0.0]}))
        assert json.loads(ws.recv())["steps"] == 1


def test_a_dropped_session_says_the_state_is_gone(served: Served) -> None:
    with PolicySession(served.http, "lstm") as session:
        assert session.compute_action([0.0, 0.0], agent="a").action in (0, 1)
        assert session._ws is not None
        session._ws.close()  # the connection drops (a replica restarts)
        with pytest.raises(SessionClosedError, match="recurrent state the server held"):
            session.compute_action([0.0, 0.0], agent="a")
        # The next call opens a new session, from the initial state.
        assert session.compute_action([0.0, 0.0], agent="a").action in (0, 1)


# ------------------------------------------------------------------ episodes and evaluate
def test_episodes_over_http_and_sessions_and_evaluate_from_every_source(
    lstm: tuple[Path, Path], served: Served
) -> None:
    """Played over HTTP (state carried), over a session (state held, reset per episode) and
    by ``rlserve evaluate`` from the checkpoint, the artifact and the URL: the same episodes."""
    from typer.testing import CliRunner

    from rlserve.cli import app

    def evaluate(*args: str) -> list[float]:
        common = ["--episodes", "3", "--num-workers", "0", "--json", "--seed", "0"]
        result = CliRunner().invoke(app, ["evaluate", *args, *common])
        assert result.exit_code == 0, result.output
        return [e["return"] for e in json.loads(result.stdout)["episodes"]]

    from_checkpoint = evaluate(str(lstm[0]))
    assert evaluate(str(lstm[1])) == from_checkpoint
    env = "training.example_envs:StatelessCartPole"
    assert evaluate(served.http, "--env", env, "--policy", "lstm") == from_checkpoint
    assert evaluate(served.http, "--env", env, "--policy", "lstm", "--session") == from_checkpoint
    with PolicyClient(served.http) as client:
        over_http = play_episodes(client, "lstm", StatelessCartPole(), 3, seed=0)
    with PolicySession(served.http, "lstm") as session:
        over_session = play_session_episodes(session, StatelessCartPole(), 3, seed=0)
    assert [e.episode_return for e in over_http] == from_checkpoint
    assert [e.episode_return for e in over_session] == from_checkpoint


# ------------------------------------------------------------------ previous action and reward
@pytest.fixture(scope="module")
def lstm_prev(tiny_policies: TinyPolicies) -> tuple[Path, Path]:
    """The LSTM that also reads the previous action and reward: checkpoint, ONNX artifact."""
    return tiny_policies.checkpoint("lstm_prev"), tiny_policies.artifact("lstm_prev", ["onnx"])


@pytest.fixture(scope="module")
def reference_prev(lstm_prev: tuple[Path, Path]) -> Any:
    """That checkpoint's policy."""
    return policy_of(lstm_prev[0])


def episode_with_rewards(reference: Any, steps: int, seed: int) -> list[dict[str, Any]]:
    """A played StatelessCartPole episode (or its first ``steps``): each step's observation,
    the reward its previous action brought, and compute_single_action's action and state."""
    env = StatelessCartPole()
    obs, _ = env.reset(seed=seed)
    state, action, reward = reference.get_initial_state(), None, None
    played = []
    for _ in range(steps):
        action, state, _ = reference.compute_single_action(
            obs, state=state, prev_action=action, prev_reward=reward, explore=False
        )
        played.append({"obs": obs.tolist(), "reward": reward, "action": action, "state": state})
        obs, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    return played


def test_the_names_of_the_previous_inputs_are_trainings() -> None:
    from exporters.manifest import PREVIOUS_ACTIONS, PREVIOUS_REWARDS
    from training import columns as cols

    assert (PREVIOUS_ACTIONS, PREVIOUS_REWARDS) == (cols.PREV_ACTIONS, cols.PREV_REWARDS)


def test_http_carries_the_previous_action_and_reward(
    lstm_prev: tuple[Path, Path], reference_prev: Any
) -> None:
    played = episode_with_rewards(reference_prev, 25, seed=2)
    app = create_app(PolicyRegistry.from_paths({"prev": lstm_prev[1]}))

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with AsyncPolicyClient("http://t", transport=transport) as client:
            described = await client.policy("prev")
            assert [(s["name"], s["shape"], s["dtype"]) for s in described["previous"]] == [
                ("prev_actions", ["batch"], "int64"),
                ("prev_rewards", ["batch"], "float32"),
            ]
            state, action = None, None
            for step in played:
                answer = await client.compute_action(
                    "prev", step["obs"], state=state, prev_action=action, prev_reward=step["reward"]
                )
                assert answer.action == step["action"]
                assert_state(answer.state, step["state"])
                state, action = answer.state, answer.action
            # The policy reads the reward: another reward, another memory.
            other = await client.compute_action(
                "prev", played[0]["obs"], state=state, prev_action=action, prev_reward=-5.0
            )
            same = await client.compute_action(
                "prev", played[0]["obs"], state=state, prev_action=action, prev_reward=1.0
            )
            assert other.state is not None and same.state is not None
            assert not np.allclose(other.state[1], same.state[1], atol=1e-6)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"prev_action": 2}, "prev_action: expected actions in [0, 2)"),
        ({"prev_action": 0.5}, "prev_action: expected integers"),
        ({"prev_action": [0]}, "prev_action: expected shape [], got [1]"),
        ({"prev_action": True}, "prev_action: expected a number, got a boolean"),
        ({"prev_reward": 1e39}, "prev_reward: expected finite numbers"),
        ({"prev_reward": "a"}, "prev_reward"),
    ],
)
def test_a_bad_previous_input_is_refused_naming_it(
    lstm_prev: tuple[Path, Path], body: dict[str, Any], detail: str
) -> None:
    app = create_app(PolicyRegistry.from_paths({"prev": lstm_prev[1]}))

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(
                wire.action_path("prev"), json={"observation": [0.0, 0.0], **body}
            )

    answer = asyncio.run(scenario())
    assert answer.status_code == 422 and detail in answer.json()["detail"], answer.text


def test_a_session_keeps_each_agents_previous_action_and_takes_its_reward(
    lstm_prev: tuple[Path, Path], reference_prev: Any
) -> None:
    played = {
        agent: episode_with_rewards(reference_prev, 10, seed)
        for agent, seed in [("a", 3), ("b", 4)]
    }
    server = ThreadedServer(create_app(PolicyRegistry.from_paths({"prev": lstm_prev[1]})))
    try:
        with PolicySession(server.http, "prev") as session:
            for step in range(10):
                for agent, steps in played.items():
                    if step >= len(steps):
                        continue
                    answer = session.compute_action(
                        steps[step]["obs"], agent=agent, reward=steps[step]["reward"]
                    )
                    assert answer.action == steps[step]["action"], (agent, step)
            with pytest.raises(BadRequestError, match="reads the previous reward") as refused:
                session.compute_actions_npy(np.zeros(2, np.float32))
            assert refused.value.status == 415
    finally:
        server.stop()


def test_evaluate_plays_the_same_episodes_from_every_source_with_previous_inputs(
    lstm_prev: tuple[Path, Path],
) -> None:
    from typer.testing import CliRunner

    from rlserve.cli import app

    def evaluate(*args: str) -> list[float]:
        common = ["--episodes", "2", "--num-workers", "0", "--json", "--seed", "5"]
        result = CliRunner().invoke(app, ["evaluate", *args, *common])
        assert result.exit_code == 0, result.output
        return [e["return"] for e in json.loads(result.stdout)["episodes"]]

    from_checkpoint = evaluate(str(lstm_prev[0]))
    assert evaluate(str(lstm_prev[1])) == from_checkpoint
    server = ThreadedServer(create_app(PolicyRegistry.from_paths({"prev": lstm_prev[1]})))
    try:
        env = ["--env", "training.example_envs:StatelessCartPole", "--policy", "prev"]
        assert evaluate(server.http, *env) == from_checkpoint
        assert evaluate(server.http, *env, "--session") == from_checkpoint
    finally:
        server.stop()
