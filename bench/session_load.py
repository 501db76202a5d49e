"""Benchmark: WebSocket sessions against unary HTTP and a uvicorn WebSocket echo, on 127.0.0.1.

Issue #16's session benchmark. Load generators: :mod:`rlserve.jobs.session_loadgen` (aiohttp
WebSockets, one message in flight per session) and :mod:`rlserve.jobs.loadgen` (HTTP).

Measured in the same run:

* the load generator's own ceiling: a plain uvicorn + starlette WebSocket echo (each text
  message answered with a small JSON text), closed loop at 1, 32 and 256 sessions;
* ``rlserve serve`` with its defaults (HAProxy ingress, one replica) and ``--max-sessions 300``:
  unary HTTP single-observation ``compute_action``, closed loop at concurrency 32;
* sessions against the same service, single observations as JSON text: closed loop at 1, 32
  and 256 sessions; open loop 256 sessions x 20 Hz; open loop at 32 sessions over total rates
  (latency from each tick's scheduled time), and at 80 % of the 32-session ceiling;
* against issue #16's targets: >= 10,000 actions/s from 32 sessions, >= 3x unary HTTP at
  concurrency 32, p99 <= 10 ms at 80 % of the 32-session rate, 256 sessions with no errors.

Prints one JSON line. ``python bench/session_load.py [--seconds 3] [--artifact DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlserve.jobs.loadgen import run_load
from rlserve.jobs.session_loadgen import run_sessions
from serving import wire

OBS = [0.01, -0.02, 0.03, 0.04]
SINGLE = json.dumps({"observation": OBS})
ECHO_APP = """
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocketDisconnect
async def echo(websocket):
    await websocket.accept()
    try:
        while True:
            await websocket.receive_text()
            await websocket.send_text('{"action":0}')
    except WebSocketDisconnect:
        pass
app = Starlette(routes=[WebSocketRoute("/echo", echo)])
"""
SESSION_COUNTS = (1, 32, 256)
TICK_HZ = 20
SWEEP_SESSIONS = 32
SWEEP_RATES = (2000, 4000, 6000, 8000, 10000, 12000)
"""Total messages/s offered by the 32 sessions together (62.5 to 375 Hz each)."""
P99_TARGET_MS = 10
MAX_SESSIONS = 300
"""256 sessions, and room for the last run's sessions the replica has not let go yet."""
SETTLE_S = 1.0
"""Between runs: the server lets go of the last run's sessions before the next opens its own."""
READY_TIMEOUT_S = 300.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g} s")


@contextlib.contextmanager
def _uvicorn(root: Path, module: str) -> Iterator[str]:
    """``uvicorn MODULE:app`` from ``root`` on a free port until the block ends; its base URL."""
    port = _free_port()
    options = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"{module}:app", *options, "--no-access-log"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        time.sleep(1.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def _artifact(root: Path) -> Path:
    from exporters import export_checkpoint
    from training.tuned_examples import load_tuned_example

    with load_tuned_example("cartpole_ppo").config.debugging(seed=0).build() as algo:
        algo.train()
        checkpoint = algo.save(str(root / "checkpoint")).checkpoint.path
    return export_checkpoint(checkpoint, root / "artifact", ["onnx"])


@contextlib.contextmanager
def _rlserve(artifact: Path, log: Path, *options: str) -> Iterator[str]:
    """``rlserve serve ARTIFACT --name cartpole OPTIONS`` until the block ends; its base URL.

    Its output goes to ``log`` (a pipe nobody reads after start-up could fill and stall it).
    """
    port = _free_port()
    command = [sys.executable, "-m", "rlserve", "serve", str(artifact), "--name", "cartpole"]
    with log.open("w") as out:
        server = subprocess.Popen(
            [*command, "--port", str(port), *options], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not any(line.startswith("serving ") for line in log.read_text().splitlines()):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rlserve serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        body = SINGLE.encode()
        url = f"{base}{wire.action_path('cartpole')}"
        asyncio.run(
            run_load(
                url, body, {"content-type": wire.JSON}, rate=500, seconds=1, concurrency=8, rows=1
            )
        )
        asyncio.run(
            run_sessions(_session_url(base), SINGLE, sessions=8, seconds=1, rate_per_session=None)
        )
        time.sleep(2.0)  # the warm-up's connections close
        yield base
    finally:
        # SIGTERM stops rlserve like Ctrl-C, also when this benchmark runs in the background
        # (where SIGINT is ignored by its children).
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)


def _session_url(base: str) -> str:
    return base.replace("http://", "ws://", 1) + wire.session_path("cartpole")


def _sessions(url: str, sessions: int, seconds: float, rate: float | None = None) -> dict[str, Any]:
    """One session run; ``rate`` is the total messages/s of all the sessions (open loop)."""
    figures = asyncio.run(
        run_sessions(
            url,
            SINGLE,
            sessions=sessions,
            seconds=seconds,
            rate_per_session=None if rate is None else rate / sessions,
            protocols=(wire.SESSION_PROTOCOL,),
        )
    )
    time.sleep(SETTLE_S)
    return figures


def _held(figures: dict[str, Any], rate: float, seconds: float) -> bool:
    """Every session opened, and under 1 % of the offered messages late or failed."""
    lost: int = figures["behind_schedule"] + figures["errors"]
    failed: int = figures["sessions_failed"]
    return failed == 0 and lost <= 0.01 * rate * seconds


def max_rate_within(runs: dict[str, dict[str, Any]], p99_ms: float, seconds: float) -> int:
    """The highest offered total rate (``NAME_at_RATE``) held whole with p99 <= ``p99_ms``."""
    ok = []
    for name, figures in runs.items():
        rate = int(name.rsplit("_", 1)[1])
        if figures["p99_ms"] <= p99_ms and _held(figures, rate, seconds):
            ok.append(rate)
    return max(ok, default=0)


def derive(figures: dict[str, Any]) -> dict[str, Any]:
    """The comparisons and issue #16's targets, from the measured runs in ``figures``."""
    sessions32 = figures["rlserve_sessions"]["c32"]
    http32 = max(1e-9, figures["rlserve_http_single"]["c32"]["req_per_s"])
    echo32 = max(1e-9, figures["uvicorn_ws_echo"]["c32"]["msgs_per_s"])
    at80 = figures["rlserve_sessions_s32_at_80pct_of_ceiling"]
    rate = max_rate_within(
        figures["rlserve_sessions_s32_open_loop"], P99_TARGET_MS, figures["seconds"]
    )
    with256 = [
        figures["rlserve_sessions"]["c256"],
        figures["rlserve_sessions_open_loop"][f"s256_at_{TICK_HZ}hz"],
    ]
    without_errors = all(f["errors"] == 0 and f["sessions_failed"] == 0 for f in with256)
    vs_http = round(sessions32["msgs_per_s"] / http32, 2)
    return {
        "sessions_c32_vs_http_c32": vs_http,
        "sessions_c32_vs_ws_echo_c32": round(sessions32["msgs_per_s"] / echo32, 3),
        f"sessions_c32_rate_with_p99_within_{P99_TARGET_MS}ms": rate,
        "sessions_c32_p99_ms_at_80pct_of_ceiling": at80["p99_ms"],
        "sessions_256_without_errors": without_errors,
        "targets_met": {
            "c32_actions_per_s_at_least_10000": sessions32["actions_per_s"] >= 10_000,
            "c32_at_least_3x_http_c32": vs_http >= 3,
            f"p99_within_{P99_TARGET_MS}ms_at_80pct": at80["p99_ms"] <= P99_TARGET_MS
            and _held(at80, at80["offered_msgs_per_s"], figures["seconds"]),
            "sessions_256_without_errors": without_errors,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--artifact", help="artifact directory (default: train and export one)")
    args = parser.parse_args()
    seconds: float = args.seconds
    figures: dict[str, Any] = {"bench": "session_load", "seconds": seconds}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The load generator's own ceiling (and the Python WebSocket server's).
        (root / "echo_app.py").write_text(ECHO_APP)
        with _uvicorn(root, "echo_app") as base:
            url = base.replace("http://", "ws://", 1) + "/echo"
            figures["uvicorn_ws_echo"] = {
                f"c{n}": _sessions(url, n, seconds) for n in SESSION_COUNTS
            }
        artifact = Path(args.artifact) if args.artifact else _artifact(root)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        options = ("--max-sessions", str(MAX_SESSIONS))
        with _rlserve(artifact, root / "rlserve.log", *options) as base:
            url = f"{base}{wire.action_path('cartpole')}"
            http = run_load(
                url,
                SINGLE.encode(),
                {"content-type": wire.JSON},
                rate=None,
                seconds=seconds,
                concurrency=32,
                rows=1,
            )
            figures["rlserve_http_single"] = {"c32": asyncio.run(http)}
            time.sleep(SETTLE_S)
            ws = _session_url(base)
            closed = {"c1": _sessions(ws, 1, seconds), "c32": _sessions(ws, 32, seconds)}
            # Open loop at 80 % of the ceiling just measured, then the sweep.
            rate80 = round(0.8 * closed["c32"]["msgs_per_s"])
            figures["rlserve_sessions_s32_at_80pct_of_ceiling"] = {
                "offered_msgs_per_s": rate80,
                **_sessions(ws, SWEEP_SESSIONS, seconds, rate=rate80),
            }
            figures["rlserve_sessions_s32_open_loop"] = {
                f"s{SWEEP_SESSIONS}_at_{rate}": _sessions(ws, SWEEP_SESSIONS, seconds, rate)
                for rate in SWEEP_RATES
            }
            closed["c256"] = _sessions(ws, 256, seconds)
            figures["rlserve_sessions"] = closed
            figures["rlserve_sessions_open_loop"] = {
                f"s256_at_{TICK_HZ}hz": _sessions(ws, 256, seconds, rate=256 * TICK_HZ)
            }
    figures.update(derive(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
