"""A policy served over HTTP for client-side tests (``rlserve evaluate`` URLs, ``rlserve bench``).

Import :func:`served_url` into a test module to use the fixture there.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["TOKEN", "served_url"]

TOKEN = "s3cret-token"
"""The bearer token the served app requires."""


@pytest.fixture(scope="module")
def served_url(cartpole_artifact: Path) -> Iterator[str]:
    """The artifact behind the HTTP app and its sessions, on uvicorn in a thread (no Serve)."""
    import uvicorn

    from serving import PolicyRegistry, ServingSettings, create_app

    registry = PolicyRegistry.from_paths({"cartpole": cartpole_artifact})
    api = create_app(registry, ServingSettings(token=TOKEN))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(api, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
