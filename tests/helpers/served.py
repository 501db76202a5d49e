"""A policy served over HTTP for client-side tests (``rlserve evaluate`` URLs, ``rlserve bench``).

Import :func:`served_url` into a test module to use the fixture there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.threaded_server import ThreadedServer

__all__ = ["TOKEN", "served_url"]

TOKEN = "s3cret-token"
"""The bearer token the served app requires."""


@pytest.fixture(scope="module")
def served_url(cartpole_artifact: Path) -> Iterator[str]:
    """The artifact behind the HTTP app and its sessions, on uvicorn in a thread (no Serve)."""
    from serving import PolicyRegistry, ServingSettings, create_app

    registry = PolicyRegistry.from_paths({"cartpole": cartpole_artifact})
    server = ThreadedServer(create_app(registry, ServingSettings(token=TOKEN)))
    try:
        yield server.http
    finally:
        server.stop()
