"""A request that outlives Serve's ``request_timeout_s`` is answered 408, not dropped."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving import AppArgs, build_app, wire

pytestmark = pytest.mark.integration


def test_slow_requests_time_out_with_408(ray_session: Any, cartpole_artifact: Path) -> None:
    from ray import serve

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 0.3})
    try:
        # Concurrent requests wait the whole batch window (1 s) for more: longer than 0.3 s.
        # (A request alone in the replica skips the window, so two are sent at once.)
        args = AppArgs(
            artifact=str(cartpole_artifact),
            name="cartpole",
            max_batch_size=64,
            batch_wait_timeout_s=1.0,
            num_cpus=0.5,
        )
        serve.run(build_app(args), name="slow", route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert client.get(wire.HEALTHZ).status_code == 200
            # Released together: on a loaded machine threads started one by one can each
            # meet an empty replica (and skip the window), so none would time out.
            start = threading.Barrier(8)

            def post(_: int) -> httpx.Response:
                start.wait(timeout=30)
                return client.post(wire.action_path("cartpole"), json={"observation": [0.0] * 4})

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(post, range(8)))
        assert 408 in [answer.status_code for answer in answers], answers
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
