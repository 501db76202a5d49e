"""WebSocket sessions on the app itself (uvicorn in a thread): protocol, limits and clients.

The same app runs in every replica; ``tests/cli/test_serve_sessions.py`` drives it through
``rlserve serve`` and HAProxy.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from serving import PolicyRegistry, ServingSettings, create_app, wire
from serving.answers import AuthenticationError, BadRequestError, NotFoundError, OverloadedError
from serving.runtime import ActionBatch, PolicyRuntime
from serving.session_client import AsyncPolicySession, PolicySession, play_session_episodes
from serving.sessions import SessionSettings
from tests.helpers.threaded_server import ThreadedServer

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OBS = [0.01, -0.02, 0.03, 0.04]


class Server(ThreadedServer):
    """The app in a thread; ``ws`` is the cartpole policy's session URL."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.ws += wire.session_path("cartpole")


def serve(artifact: Path, sessions: SessionSettings, infer: Any = None, **limits: Any) -> Server:
    registry = PolicyRegistry.from_paths({"cartpole": artifact})
    settings = ServingSettings(token=TOKEN, **limits)
    return Server(create_app(registry, settings, sessions=sessions, session_infer=infer))


@pytest.fixture(scope="module")
def server(cartpole_artifact: Path) -> Iterator[Server]:
    running = serve(cartpole_artifact, SessionSettings(), max_body_bytes=64 * 1024, max_rows=64)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def strict(cartpole_artifact: Path) -> Iterator[Server]:
    """Short idle timeout, two sessions at most."""
    running = serve(
        cartpole_artifact, SessionSettings(max_sessions=2, idle_timeout_s=0.5, retry_after_s=2)
    )
    yield running
    running.stop()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# ------------------------------------------------------------------ handshake
@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("cartpole/session", {}, 401),
        ("cartpole/session", {"Authorization": "Bearer nope"}, 401),
        ("nope/session", AUTH, 404),
        ("cartpole/session?explore=maybe", AUTH, 422),
    ],
)
def test_a_bad_handshake_is_refused_before_the_upgrade(
    server: Server, path: str, headers: dict[str, str], status: int
) -> None:
    url = server.ws.replace("cartpole/session", path)
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers=headers)
    assert refused.value.response.status_code == status
    assert "detail" in json.loads(bytes(refused.value.response.body or b""))


def test_a_session_opened_by_its_first_message_sends_it_once(server: Server) -> None:
    observations = [[0.01 * i, 0.0, 0.0, 0.0] for i in range(6)]
    with httpx.Client(base_url=server.http, headers=AUTH) as http:
        expected = [
            http.post(
                wire.action_path("cartpole"),
                json={"observation": obs, "explore": True, "seed": seed},
            ).json()["action"]
            for seed, obs in enumerate(observations)
        ]
    session = PolicySession(server.http, "cartpole", token=TOKEN)  # not connected yet
    try:
        got = [
            session.compute_action(obs, explore=True, seed=seed).action
            for seed, obs in enumerate(observations)
        ]
    finally:
        session.close()
    assert got == expected


def test_the_clients_raise_typed_errors_for_refusals_at_once(server: Server) -> None:
    with pytest.raises(AuthenticationError):
        PolicySession(server.http, "cartpole").connect()
    start = time.monotonic()
    with pytest.raises(NotFoundError, match="unknown policy 'nope'"):
        PolicySession(server.http, "nope", token=TOKEN, backoff_s=1.0).connect()
    assert time.monotonic() - start < 1.0  # final: no retry
    with pytest.raises(ValueError, match="base_url"):
        PolicySession("ftp://x", "cartpole")


# ------------------------------------------------------------------ messages
def test_json_npy_and_batch_messages_match_the_http_api(server: Server) -> None:
    with httpx.Client(base_url=server.http, headers=AUTH) as http:
        expected = http.post(
            wire.action_path("cartpole"), json={"observation": OBS, "return_dist_inputs": True}
        ).json()
    with PolicySession(server.http, "cartpole", token=TOKEN) as session:
        one = session.compute_action(OBS, return_dist_inputs=True)
        assert (one.action, one.policy, one.version) == (
            expected["action"],
            "cartpole",
            expected["version"],
        )
        assert one.action_dist_inputs == pytest.approx(expected["action_dist_inputs"])
        batch = session.compute_actions([OBS, OBS, OBS])
        assert batch.actions == [expected["action"]] * 3
        single = session.compute_actions_npy(np.asarray(OBS, np.float32))
        assert single.shape == () and int(single) == expected["action"]
        rows = session.compute_actions_npy(np.tile(np.asarray(OBS, np.float32), (5, 1)))
        assert rows.tolist() == [expected["action"]] * 5
    offered = [Subprotocol(wire.SESSION_PROTOCOL)]
    with connect(server.ws, additional_headers=AUTH, subprotocols=offered) as ws:
        assert ws.subprotocol == wire.SESSION_PROTOCOL
        ws.send(json.dumps({"id": "tick-7", "observation": OBS}))
        assert json.loads(ws.recv())["id"] == "tick-7"


BAD_BODIES = [
    '{"observation": [1, 2]}',
    '{"observation": [true, 0, 0, 0]}',
    '{"observation": [0, 0, 0, "x"]}',
    '{"observation": [0, 0, 0, 0], "seed": -1}',
    '{"observation": [0, 0, 0, 0], "explore": "yes"}',
    '{"observations": []}',
    '{"observations": [[0, 0, 0, 0]], "extra": 1}',
    '{"observation": [0, 0, 0, 0], "seed": 1' + "0" * 40 + "}",
    "not json",
    "[" * 100 + "]" * 100,
    '{"observation": NaN}',
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_bad_message_gets_the_http_status_and_wording_and_the_session_goes_on(
    server: Server, body: str
) -> None:
    route = wire.actions_path if '"observations"' in body else wire.action_path
    with httpx.Client(base_url=server.http, headers=AUTH) as http:
        answer = http.post(route("cartpole"), content=body, headers={"content-type": wire.JSON})
    assert 400 <= answer.status_code < 500
    with connect(server.ws, additional_headers=AUTH) as ws:
        ws.send(body)
        error = json.loads(ws.recv())["error"]
        assert error == {"status": answer.status_code, "detail": answer.json()["detail"]}
        ws.send(json.dumps({"id": 2, "observation": OBS}))
        assert json.loads(ws.recv())["action"] in (0, 1)


@pytest.mark.parametrize(
    ("message", "status", "words"),
    [
        ("[1, 2]", 422, "message: expected a JSON object"),
        ('{"id": [1], "observation": [0, 0, 0, 0]}', 422, "id: expected a string"),
        ('{"id": 9, "observations": [[0, 0, 0, 0]]' + ", [0,0,0,0]" * 0 + "}", 200, ""),
    ],
)
def test_session_only_fields(server: Server, message: str, status: int, words: str) -> None:
    with connect(server.ws, additional_headers=AUTH) as ws:
        ws.send(message)
        answer = json.loads(ws.recv())
    if status == 200:
        assert answer["id"] == 9 and len(answer["actions"]) == 1
    else:
        assert answer["error"]["status"] == status and words in answer["error"]["detail"]


def test_bad_npy_messages_are_answered_on_the_socket(server: Server) -> None:
    cases = [
        (b"garbage", 400, "malformed .npy"),
        (npy(np.zeros((2, 3), np.float32)), 422, "expected shape"),
        (npy(np.zeros((65, 4), np.float32)), 413, "expected 1..64 rows"),
        (npy(np.array(["a", "b"])), 422, "expected numbers"),
    ]
    with connect(server.ws, additional_headers=AUTH) as ws:
        for frame, status, words in cases:
            ws.send(frame)
            error = json.loads(ws.recv())["error"]
            assert error["status"] == status and words in error["detail"], (words, error)
        ws.send(npy(np.zeros(4, np.float32)))
        answer = ws.recv()
        assert isinstance(answer, bytes) and np.load(io.BytesIO(answer)).shape == ()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
        ),
        max_leaves=20,
    )
)
def test_fuzzed_messages_get_an_answer_or_a_4xx_and_never_close_the_session(
    server: Server, message: Any
) -> None:
    with connect(server.ws, additional_headers=AUTH) as ws:
        ws.send(json.dumps(message))
        answer = json.loads(ws.recv())
        if "error" in answer:
            assert 400 <= answer["error"]["status"] < 500, answer
        else:
            assert answer["action"] in (0, 1)
        ws.send(json.dumps({"observation": OBS}))  # still open and answering
        assert "action" in json.loads(ws.recv())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.binary(max_size=300)
    | hnp.arrays(
        st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    ).map(npy)
)
def test_fuzzed_binary_frames_get_an_answer_or_a_4xx(server: Server, frame: bytes) -> None:
    with connect(server.ws, additional_headers=AUTH) as ws:
        ws.send(frame)
        answer = ws.recv()
        if isinstance(answer, str):
            assert 400 <= json.loads(answer)["error"]["status"] < 500, answer
        else:
            assert np.load(io.BytesIO(answer)).size >= 1
        ws.send(json.dumps({"observation": OBS}))
        assert "action" in json.loads(ws.recv())


# ------------------------------------------------------------------ order and flow
def test_pipelined_messages_are_answered_in_order(server: Server) -> None:
    with connect(server.ws, additional_headers=AUTH) as ws:
        for i in range(300):
            ws.send(json.dumps({"id": i, "observation": [0.01 * (i % 7), 0, 0, 0]}))
        assert [json.loads(ws.recv())["id"] for _ in range(300)] == list(range(300))
    with PolicySession(server.http, "cartpole", token=TOKEN) as session:
        observations = [[0.01 * (i % 7), 0.0, 0.0, 0.0] for i in range(100)]
        streamed = [a.action for a in session.stream(observations, window=16)]
        assert streamed == [session.compute_action(o).action for o in observations]


def test_a_client_that_does_not_read_is_not_buffered_without_bound(
    cartpole_artifact: Path,
) -> None:
    """Past the window the server stops reading: inference starts for ``window`` at most."""
    started, release = [], asyncio.Event()
    loop_of: list[asyncio.AbstractEventLoop] = []

    async def held(
        runtime: PolicyRuntime,
        leaves: list[np.ndarray],
        explore: bool,
        seed: Any,
        *carried: Any,
    ) -> ActionBatch:
        loop_of[:] = [asyncio.get_running_loop()]
        started.append(1)
        await release.wait()
        return runtime.compute(leaves, explore=explore, seed=seed)

    running = serve(cartpole_artifact, SessionSettings(window=4), infer=held)
    try:
        with connect(running.ws, additional_headers=AUTH) as ws:
            for i in range(50):
                ws.send(json.dumps({"id": i, "observation": OBS}))
            time.sleep(0.5)
            assert len(started) == 4  # the window
            loop_of[0].call_soon_threadsafe(release.set)
            assert [json.loads(ws.recv())["id"] for _ in range(50)] == list(range(50))
    finally:
        running.stop()


def test_a_slow_answer_is_a_408_on_the_socket_and_the_session_goes_on(
    cartpole_artifact: Path,
) -> None:
    async def slow_first(
        runtime: PolicyRuntime,
        leaves: list[np.ndarray],
        explore: bool,
        seed: Any,
        *carried: Any,
    ) -> ActionBatch:
        if seed == 1:
            await asyncio.sleep(2.0)
        return runtime.compute(leaves, explore=explore, seed=seed)

    running = serve(cartpole_artifact, SessionSettings(message_timeout_s=0.2), infer=slow_first)
    try:
        with PolicySession(running.http, "cartpole", token=TOKEN) as session:
            with pytest.raises(BadRequestError) as late:
                session.compute_action(OBS, seed=1)
            assert late.value.status == 408
            assert session.compute_action(OBS, seed=2).action in (0, 1)
    finally:
        running.stop()


# ------------------------------------------------------------------ limits and closes
def test_an_oversize_message_closes_with_1009(server: Server) -> None:
    with connect(server.ws, additional_headers=AUTH) as ws:
        ws.send(json.dumps({"id": 1, "observation": OBS}))
        ws.send("x" * (64 * 1024 + 1))
        assert json.loads(ws.recv())["id"] == 1  # what came before is still answered
        with pytest.raises(ConnectionClosed):
            ws.recv()
        assert ws.close_code == wire.CloseCode.TOO_BIG


def test_a_text_frame_that_is_not_utf8_closes_with_1007(server: Server) -> None:
    with connect(server.ws, additional_headers=AUTH) as ws:
        ws.send(b"\xff\xfe", text=True)
        with pytest.raises(ConnectionClosed):
            ws.recv()
        assert ws.close_code == wire.CloseCode.INVALID_DATA


def test_an_idle_session_is_closed_and_the_client_reconnects(strict: Server) -> None:
    with connect(strict.ws, additional_headers=AUTH) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == wire.CloseCode.NORMAL
        assert "idle" in (ws.close_reason or "")
    with PolicySession(strict.http, "cartpole", token=TOKEN) as session:
        first = session.compute_action(OBS).action
        time.sleep(1.0)  # the server closes the idle session meanwhile
        assert session.compute_action(OBS).action == first
        assert session.reconnects == 1


def test_beyond_max_sessions_a_handshake_gets_503_with_retry_after(strict: Server) -> None:
    a = connect(strict.ws, additional_headers=AUTH, legacy=True)
    b = connect(strict.ws, additional_headers=AUTH, legacy=True)
    try:
        with pytest.raises(InvalidStatus) as full:
            connect(strict.ws, additional_headers=AUTH)
        assert full.value.response.status_code == 503
        assert full.value.response.headers["Retry-After"] == "2"
        with pytest.raises(OverloadedError):
            PolicySession(strict.http, "cartpole", token=TOKEN, retries=0).connect()
    finally:
        a.close()
        b.close()
    time.sleep(0.2)  # the server sees both closes
    with PolicySession(strict.http, "cartpole", token=TOKEN) as session:
        assert session.compute_action(OBS).action in (0, 1)


# ------------------------------------------------------------------ async client, episodes
def test_the_async_session_answers_as_the_sync_one(server: Server) -> None:
    async def run() -> tuple[Any, list[Any], Any]:
        async with AsyncPolicySession(server.http, "cartpole", token=TOKEN) as session:
            one = await session.compute_action(OBS)
            streamed = [a.action async for a in session.stream([OBS] * 20, window=8)]
            rows = await session.compute_actions_npy(np.zeros((3, 4), np.float32))
            return one.action, streamed, rows

    action, streamed, rows = asyncio.run(run())
    assert streamed == [action] * 20 and rows.shape == (3,)


def test_episodes_over_a_session_are_the_episodes_over_http(server: Server) -> None:
    import gymnasium as gym

    from serving.client import PolicyClient, play_episodes

    env = gym.make("CartPole-v1")
    with PolicyClient(server.http, token=TOKEN) as client:
        over_http = play_episodes(client, "cartpole", env, 2, seed=3, explore=True)
    with PolicySession(server.http, "cartpole", token=TOKEN) as session:
        over_session = play_session_episodes(session, env, 2, seed=3, explore=True)
    assert over_session == over_http
