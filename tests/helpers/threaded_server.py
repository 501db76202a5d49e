"""An ASGI app on uvicorn in a daemon thread (HTTP and WebSockets), on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

__all__ = ["ThreadedServer"]


class ThreadedServer:
    """``uvicorn`` serving ``app`` in a daemon thread until :meth:`stop`.

    Attributes:
        http: ``http://127.0.0.1:PORT``.
        ws: ``ws://127.0.0.1:PORT``.
    """

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = self.sock.getsockname()[1]
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for its thread (10 s at most)."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
