"""Overload (503 + Retry-After) and timeouts (408) through ``rlserve serve``'s HAProxy ingress.

Slow clients make the replica's limits deterministic: a request whose body has not fully
arrived holds its replica slot, so a few raw sockets that send headers and most of a body fill
``--max-ongoing-requests`` and ``--max-queued-requests`` exactly. The bodies are larger than
HAProxy's 16 KiB buffer: HAProxy holds a smaller unfinished body itself (it never reaches a
replica; see ``tests/cli/test_serve_overload.py``).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from rlserve.jobs.service import free_port
from tests.helpers.serve_process import serving

# Serial: filling a replica with slow requests and timing its 503s must not compete with
# another test for the CPU (``make test`` runs serial tests alone, after the parallel phase).
pytestmark = [pytest.mark.integration, pytest.mark.serial]

ROUTE = "/v1/policies/cartpole/compute_action"
BODY = json.dumps({"observation": [0.01, -0.02, 0.03, 0.04]}).encode()
LARGE = BODY[:-1] + b" " * 20_000 + b"}"
"""Valid JSON larger than HAProxy's buffer, so HAProxy forwards it before it is complete."""
JSON = {"content-type": "application/json"}
TIMEOUT_S = 4.0


@pytest.fixture(scope="module")
def serve_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve_limits")


@pytest.fixture(scope="module")
def url(cartpole_artifact: Path, serve_dir: Path) -> Iterator[str]:
    port = free_port()
    args = [
        *(str(cartpole_artifact), "--name", "cartpole", "--port", str(port)),
        *("--max-batch-size", "2", "--max-ongoing-requests", "2"),
        *("--max-queued-requests", "1", "--request-timeout-s", str(TIMEOUT_S)),
    ]
    with serving(args, serve_dir):
        yield f"http://127.0.0.1:{port}"


class SlowClient:
    """One request sent by hand: headers and most of the body now, the rest on :meth:`finish`."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        head = (
            f"POST {ROUTE} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(LARGE)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + LARGE[:-10])

    def finish(self) -> None:
        self.sock.sendall(LARGE[-10:])

    def status(self) -> int:
        """The answer's status code (waits for it)."""
        data = b""
        while b"\r\n" not in data:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed without an answer"
            data += chunk
        self.sock.close()
        return int(data.split(b" ", 2)[1])


def _fill_the_replica(url: str, client: httpx.Client) -> tuple[list[SlowClient], httpx.Response]:
    """Slow requests holding every slot, and the first request refused because of them.

    Ray reloads HAProxy now and then (e.g. shortly after a start): connections the old HAProxy
    process accepted may then reach the replica through Serve's fallback proxy, which holds no
    replica slot. Slow clients that fill nothing within a few seconds are closed and replaced.
    """
    for _ in range(4):
        held = [SlowClient(url), SlowClient(url)]  # --max-ongoing-requests 2
        time.sleep(0.5)
        held.append(SlowClient(url))  # --max-queued-requests 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            answer = client.post(ROUTE, content=BODY, headers=JSON)
            if answer.status_code != 200:
                return held, answer
            time.sleep(0.2)
        for slow in held:
            slow.sock.close()
    raise AssertionError("slow requests never filled the replica")


def test_a_full_replica_answers_503_with_retry_after_and_loses_nothing(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        held, first = _fill_the_replica(url, client)
        try:
            refused = [first] + [client.post(ROUTE, content=BODY, headers=JSON) for _ in range(2)]
            assert [r.status_code for r in refused] == [503, 503, 503], [r.text for r in refused]
            assert all(r.headers["retry-after"] == "1" for r in refused)
            for slow in held:
                slow.finish()
            assert [slow.status() for slow in held] == [200, 200, 200]
        finally:
            for slow in held:
                slow.sock.close()
        assert client.post(ROUTE, content=BODY, headers=JSON).status_code == 200


def test_a_request_past_the_timeout_is_answered_408(url: str) -> None:
    stalled = SlowClient(url)  # its body never completes
    start = time.monotonic()
    assert stalled.status() == 408
    assert TIMEOUT_S - 0.5 <= time.monotonic() - start <= TIMEOUT_S + 5
    with httpx.Client(base_url=url, timeout=10) as client:
        answer = client.post(ROUTE, content=BODY, headers=JSON)
    assert answer.status_code == 200, answer.text


def test_replicas_run_at_normal_priority_without_metrics(url: str, serve_dir: Path) -> None:
    replicas = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if (
                "ServeReplica" in " ".join(proc.info["cmdline"] or [])
                and Path(proc.cwd()) == serve_dir
            ):
                replicas.append((proc.nice(), proc.environ()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    assert replicas, "no replica process found"
    # Ray's default for its workers is nice 15: any busy process would come first.
    assert [nice for nice, _ in replicas] == [0] * len(replicas)
    # No --metrics-port: nobody could read Ray's metrics, and its agent costs tail latency.
    assert all(env.get("RAY_enable_metrics_collection") == "0" for _, env in replicas)
