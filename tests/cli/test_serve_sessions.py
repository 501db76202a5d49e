"""WebSocket sessions through a real ``rlserve serve`` (HAProxy ingress, token) on 127.0.0.1."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from rlserve.jobs.service import free_port
from serving import wire
from serving.answers import AuthenticationError, NotFoundError, OverloadedError
from serving.session_client import PolicySession
from tests.helpers.serve_process import serving
from tests.serving.test_sessions import BAD_BODIES

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OBS = [0.01, -0.02, 0.03, 0.04]
MAX_SESSIONS = 6
REQUEST_TIMEOUT_S = 2
IDLE_TIMEOUT_S = 5


class Service:
    def __init__(self, url: str, cwd: Path) -> None:
        self.url, self.cwd = url, cwd
        self.ws = url.replace("http://", "ws://") + wire.session_path("cartpole")


@pytest.fixture(scope="module")
def service(cartpole_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    cwd = tmp_path_factory.mktemp("serve_sessions")
    port = free_port()
    args = [str(cartpole_artifact), "--name", "cartpole", "--port", str(port), "--token", TOKEN]
    args += ["--max-sessions", str(MAX_SESSIONS), "--request-timeout-s", str(REQUEST_TIMEOUT_S)]
    args += ["--session-idle-timeout-s", str(IDLE_TIMEOUT_S)]
    with serving(args, cwd):
        yield Service(f"http://127.0.0.1:{port}", cwd)


def test_sessions_answer_json_batch_and_npy_through_haproxy(service: Service) -> None:
    with httpx.Client(base_url=service.url, headers=AUTH) as http:
        expected = http.post(wire.action_path("cartpole"), json={"observation": OBS}).json()
    with PolicySession(service.url, "cartpole", token=TOKEN) as session:
        one = session.compute_action(OBS)
        assert (one.action, one.version) == (expected["action"], expected["version"])
        assert session.compute_actions([OBS, OBS]).actions == [one.action] * 2
        assert (
            session.compute_actions_npy(np.tile(np.asarray(OBS, np.float32), (3, 1))).tolist()
            == [one.action] * 3
        )
    with pytest.raises(AuthenticationError):
        PolicySession(service.url, "cartpole").connect()
    with pytest.raises(NotFoundError):
        PolicySession(service.url, "nope", token=TOKEN).connect()


def test_a_session_outlives_the_request_timeout_and_bad_messages(service: Service) -> None:
    with connect(service.ws, additional_headers=AUTH) as ws:
        ws.send('{"id": 1, "observation": [1, 2]}')
        assert json.loads(ws.recv())["error"]["status"] == 422
        time.sleep(REQUEST_TIMEOUT_S + 1.0)  # Serve's request timeout would have cut it here
        ws.send(json.dumps({"id": 2, "observation": OBS}))
        assert json.loads(ws.recv())["id"] == 2
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(OBS, np.float32), allow_pickle=False)
        ws.send(buffer.getvalue())
        answer = ws.recv()
        assert isinstance(answer, bytes) and np.load(io.BytesIO(answer)).shape == ()


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_bad_message_gets_the_http_answer_and_the_session_goes_on(
    service: Service, body: str
) -> None:
    route = wire.actions_path if '"observations"' in body else wire.action_path
    with httpx.Client(base_url=service.url, headers=AUTH) as http:
        answer = http.post(route("cartpole"), content=body, headers={"content-type": wire.JSON})
    with connect(service.ws, additional_headers=AUTH) as ws:
        ws.send(body)
        error = json.loads(ws.recv())["error"]
        assert error == {"status": answer.status_code, "detail": answer.json()["detail"]}
        ws.send(json.dumps({"id": 2, "observation": OBS}))
        assert json.loads(ws.recv())["id"] == 2


def test_pipelined_messages_come_back_in_order_and_violations_close(service: Service) -> None:
    with connect(service.ws, additional_headers=AUTH) as ws:
        for i in range(200):
            ws.send(json.dumps({"id": i, "observation": [0.01 * (i % 5), 0, 0, 0]}))
        assert [json.loads(ws.recv())["id"] for _ in range(200)] == list(range(200))
        ws.send(b"\xff\xfe", text=True)  # not UTF-8
        with pytest.raises(ConnectionClosed):
            ws.recv()
        assert ws.close_code == wire.CloseCode.INVALID_DATA
    with connect(service.ws, additional_headers=AUTH, max_size=None) as ws:
        ws.send("[" + "0," * (5 * 1024 * 1024) + "0]")  # over the 8 MiB message limit
        with pytest.raises(ConnectionClosed):
            ws.recv()
        assert ws.close_code == wire.CloseCode.TOO_BIG
    with connect(service.ws, additional_headers=AUTH) as ws:
        start = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=IDLE_TIMEOUT_S + 10)
        assert ws.close_code == wire.CloseCode.NORMAL
        assert IDLE_TIMEOUT_S - 0.5 <= time.monotonic() - start <= IDLE_TIMEOUT_S + 5


def test_concurrent_sessions_are_answered_and_the_next_is_refused_fast(service: Service) -> None:
    sessions = [PolicySession(service.url, "cartpole", token=TOKEN) for _ in range(MAX_SESSIONS)]
    errors: list[BaseException] = []

    def play(session: PolicySession) -> None:
        try:
            for _ in range(200):
                assert session.compute_action(OBS).action in (0, 1)
        except BaseException as err:  # reported below
            errors.append(err)

    try:
        for session in sessions:
            session.connect()
        threads = [threading.Thread(target=play, args=(s,)) for s in sessions]
        for thread in threads:
            thread.start()
        start = time.monotonic()
        with pytest.raises(InvalidStatus) as full:
            connect(service.ws, additional_headers=AUTH)
        assert time.monotonic() - start < 2.0  # refused at once, not queued
        assert full.value.response.status_code == 503
        assert full.value.response.headers["Retry-After"] == "1"
        with pytest.raises(OverloadedError):
            PolicySession(service.url, "cartpole", token=TOKEN, retries=0).connect()
        # The sessions' slots come on top of HTTP's: unary requests still go through.
        with httpx.Client(base_url=service.url, headers=AUTH) as http:
            answer = http.post(wire.action_path("cartpole"), json={"observation": OBS})
            assert answer.status_code == 200
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors[:3]
        assert all(s.reconnects == 0 for s in sessions)
    finally:
        for session in sessions:
            session.close()


def test_a_session_client_reconnects_after_its_replica_is_killed(service: Service) -> None:
    with PolicySession(service.url, "cartpole", token=TOKEN, retries=12, backoff_s=0.25) as session:
        first = session.compute_action(OBS).action
        replicas = [
            proc
            for proc in psutil.process_iter(["cmdline"])
            if " ".join(proc.info["cmdline"] or []).startswith("ray::ServeReplica")
            and _cwd(proc) == service.cwd
        ]
        assert len(replicas) == 1
        replicas[0].kill()
        deadline = time.monotonic() + 60
        while True:  # each call reconnects (backing off) until the new replica answers
            try:
                assert session.compute_action(OBS).action == first
                break
            except OverloadedError:
                assert time.monotonic() < deadline, "no replica came back"
        assert session.reconnects >= 1


def _cwd(proc: psutil.Process) -> Path | None:
    try:
        return Path(proc.cwd())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
