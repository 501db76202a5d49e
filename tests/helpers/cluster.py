"""A 2-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``).

Both nodes run in the foreground (``--block``) in their own process groups, so the fixture ends
exactly what it started and never a developer's own cluster (``ray stop`` would end every Ray
process on the machine). ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which keeps a single-machine
Ray on loopback, refuses a second node, so these nodes use Ray's own choice of address.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["Cluster", "cluster_env", "run_on_cluster", "two_node_cluster"]

BIN = Path(sys.executable).parent
TOKEN = secrets.token_hex(32)
CURRENT_CLUSTER = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"


def cluster_env() -> dict[str, str]:
    """The environment for the nodes and for the commands that join them."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    }
    env.update(
        # Token authentication on every node and client (a node or driver without it is
        # refused), with this cluster's own token, not the one in ~/.ray.
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=TOKEN,
        RAY_USAGE_STATS_ENABLED="0",
        RAY_worker_niceness="0",
        # A node that dies is declared dead after ~3 s rather than Ray's ~30 s (the GCS checks
        # each raylet every second and gives up after 3 missed answers).
        RAY_health_check_period_ms="1000",
        RAY_health_check_timeout_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    return env


class Cluster(str):
    """The head's ``127.0.0.1:port``, with the ``ray start`` processes behind it."""

    head: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]

    def kill_worker_node(self) -> None:
        """SIGKILL the worker node's whole process group: raylet, workers, everything."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_on_cluster(code: str, timeout: float = 120) -> Any:
    """Run ``code`` in a fresh Python; it prints one JSON line last, returned parsed."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=cluster_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _alive_nodes(address: str) -> int:
    code = (
        f"import json, ray; ray.init(address={address!r}, configure_logging=False, "
        "log_to_driver=False); print(json.dumps(sum(n['Alive'] for n in ray.nodes())))"
    )
    try:
        return int(run_on_cluster(code, timeout=60))
    except (AssertionError, subprocess.TimeoutExpired, ValueError):
        return 0


@contextmanager
def two_node_cluster(
    cpus_per_node: int = 1, node_env: dict[str, str] | None = None
) -> Iterator[Cluster]:
    """Start the cluster; yield the head's ``127.0.0.1:port``; end both nodes.

    ``node_env``: more environment for both nodes' ``ray start`` (e.g. the ingress's).
    """
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = [
        f"--num-cpus={cpus_per_node}",
        "--disable-usage-stats",
        "--block",
    ]
    head = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--include-dashboard=false"]
    worker = [str(BIN / "ray"), "start", f"--address={address}"]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for command in (head + common, worker + common):
            processes.append(
                subprocess.Popen(
                    command,
                    env={**cluster_env(), **(node_env or {})},
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            if len(processes) == 1:
                time.sleep(3)  # the worker node needs the head's GCS
        deadline = time.monotonic() + 120
        while _alive_nodes(address) < 2:
            assert time.monotonic() < deadline, "the 2-node cluster did not come up"
            assert all(p.poll() is None for p in processes), "a node exited"
            time.sleep(2)
        cluster = Cluster(address)
        cluster.head, cluster.worker = processes
        yield cluster
    finally:
        # SIGTERM to `ray start` alone: it drains its node and ends what it started (~4 s);
        # the same signal to its whole group cuts the raylet off first and the drain hangs.
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # `ray start` recorded the head for Ray's auto-discovery (`ray.init()` with no address,
        # `serve run`); a record left behind would send them to a dead address.
        with contextlib.suppress(OSError):
            if CURRENT_CLUSTER.read_text().strip().endswith(f":{port}"):
                CURRENT_CLUSTER.unlink()
