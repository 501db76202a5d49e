"""The session load generator against real WebSocket echoes (uvicorn in a thread, 127.0.0.1).

The echoes have known answer times and behaviours (slow, error answers, closing mid-run, a
token on the handshake), so the figures can be checked. Then bench/session_load.py's own echo
app under the generator, and its comparisons on figures whose outcome is known.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from rlserve.jobs.session_loadgen import run_sessions
from tests.helpers.threaded_server import ThreadedServer

ROOT = Path(__file__).resolve().parents[2]
SLOW_S = 0.05
CLOSE_AFTER = 3
TOKEN = "t0ken"


async def _echo(websocket: WebSocket) -> None:
    """Answer each message in kind; the path says how (see the routes)."""
    path = websocket.url.path
    if path == "/private" and websocket.headers.get("authorization") != f"Bearer {TOKEN}":
        await websocket.close(code=1008)  # before the accept: the handshake is refused (403)
        return
    await websocket.accept()
    answered = 0
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if path == "/slow":
            await asyncio.sleep(SLOW_S)
        if path == "/close" and answered == CLOSE_AFTER:
            await websocket.close(code=1000)
            return
        if message.get("bytes") is not None:
            await websocket.send_bytes(b"\x93NUMPY")
        elif path == "/error":
            await websocket.send_text('{"id":null,"error":{"status":422,"detail":"no"}}')
        else:
            await websocket.send_text('{"action":0}')
        answered += 1


ECHO = Starlette(
    routes=[WebSocketRoute(p, _echo) for p in ("/echo", "/slow", "/error", "/close", "/private")]
)


class Server(ThreadedServer):
    """The echo (or the bench's echo app) in a thread; ``base`` is its ``ws://`` root."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.base = self.ws


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    server = Server(ECHO)
    yield server.base
    server.stop()


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """bench/session_load.py, imported by path (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "bench_session_load", ROOT / "bench" / "session_load.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(url: str, message: str | bytes = '{"observation":[0]}', **load: Any) -> dict[str, Any]:
    return asyncio.run(run_sessions(url, message, **load))


def _sane(figures: dict[str, Any], sessions: int) -> None:
    assert figures["sessions_opened"] == sessions
    assert figures["sessions_failed"] == 0
    assert 0 < figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"]


def test_closed_loop_measures_the_ceiling(echo: str) -> None:
    figures = _run(f"{echo}/echo", sessions=4, seconds=0.5, rate_per_session=None, rows=3)
    _sane(figures, 4)
    assert figures["errors"] == figures["behind_schedule"] == 0
    assert figures["msgs_per_s"] > 100  # thousands here; hundreds even on a loaded machine
    assert abs(figures["actions_per_s"] - 3 * figures["msgs_per_s"]) <= 3


def test_closed_loop_latency_runs_from_each_send(echo: str) -> None:
    # Two sessions, 50 ms per answer: about 40 messages/s, each answer 50 ms after its send.
    figures = _run(f"{echo}/slow", sessions=2, seconds=0.6, rate_per_session=None)
    _sane(figures, 2)
    assert figures["errors"] == 0
    assert 20 <= figures["msgs_per_s"] <= 41
    assert SLOW_S * 1000 <= figures["p50_ms"] < SLOW_S * 1000 + 40


def test_open_loop_keeps_the_schedule_when_the_server_keeps_up(echo: str) -> None:
    figures = _run(f"{echo}/echo", sessions=4, seconds=1.0, rate_per_session=50)
    _sane(figures, 4)
    assert figures["errors"] == figures["behind_schedule"] == 0
    assert 150 <= figures["msgs_per_s"] <= 201  # 4 x 50 Hz
    assert figures["p50_ms"] < 40


def test_open_loop_counts_the_queue_a_slow_server_builds(echo: str) -> None:
    # 50 ms per answer, one in flight per session: at most 20 of the 50 ticks a second go out.
    # Latency runs from the scheduled tick, so the waiting shows, and what never left counts.
    figures = _run(f"{echo}/slow", sessions=2, seconds=1.0, rate_per_session=50)
    _sane(figures, 2)
    assert figures["errors"] == 0
    assert figures["msgs_per_s"] <= 42
    assert figures["behind_schedule"] >= 2 * 20  # of the 2 x 50 ticks, about 60 never sent
    assert figures["p99_ms"] > 300  # the last ticks sent wait ~0.6 s behind their schedule


def test_error_answers_are_errors(echo: str) -> None:
    figures = _run(f"{echo}/error", sessions=2, seconds=0.3, rate_per_session=None)
    assert figures["errors"] > 0
    assert figures["msgs_per_s"] == 0
    assert figures["sessions_opened"] == 2


def test_a_session_closed_mid_run_counts_what_it_lost(echo: str) -> None:
    # Closed loop: one error per session lost. Open loop: the tick in flight and every tick
    # still due (20 ticks each at 20 Hz for 1 s; 3 answered).
    closed = _run(f"{echo}/close", sessions=2, seconds=0.3, rate_per_session=None)
    assert closed["errors"] == 2
    opened = _run(f"{echo}/close", sessions=2, seconds=1.0, rate_per_session=20)
    assert opened["errors"] == 2 * (20 - CLOSE_AFTER)
    assert opened["behind_schedule"] == 0
    assert opened["msgs_per_s"] > 0


def test_the_token_goes_on_the_handshake(echo: str) -> None:
    headers = {"authorization": f"Bearer {TOKEN}"}
    figures = _run(
        f"{echo}/private", headers=headers, sessions=2, seconds=0.2, rate_per_session=None
    )
    _sane(figures, 2)
    assert figures["errors"] == 0
    refused = _run(f"{echo}/private", sessions=3, seconds=0.2, rate_per_session=None)
    assert refused["sessions_opened"] == 0
    assert refused["sessions_failed"] == 3
    assert refused["msgs_per_s"] == refused["errors"] == 0


def test_bytes_go_as_binary_frames(echo: str) -> None:
    figures = _run(
        f"{echo}/echo", b"\x93NUMPY", sessions=2, seconds=0.3, rate_per_session=None, rows=8
    )
    _sane(figures, 2)
    assert figures["errors"] == 0
    assert abs(figures["actions_per_s"] - 8 * figures["msgs_per_s"]) <= 8


@pytest.mark.parametrize(
    ("field", "load"),
    [
        ("sessions", {"sessions": 0, "seconds": 1.0, "rate_per_session": None}),
        ("seconds", {"sessions": 1, "seconds": 0.0, "rate_per_session": None}),
        ("rate_per_session", {"sessions": 1, "seconds": 1.0, "rate_per_session": -5.0}),
    ],
)
def test_bad_arguments_name_the_field(field: str, load: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=field):
        _run("ws://127.0.0.1:9/never", **load)


def test_the_bench_echo_app_answers_the_generator(bench: ModuleType) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(bench.ECHO_APP, "echo_app.py", "exec"), namespace)
    server = Server(namespace["app"])
    try:
        figures = _run(
            f"{server.base}/echo", bench.SINGLE, sessions=3, seconds=0.3, rate_per_session=None
        )
    finally:
        server.stop()
    _sane(figures, 3)
    assert figures["errors"] == 0


def _figures(p99_ms: float, behind: int = 0, errors: int = 0, failed: int = 0) -> dict[str, Any]:
    return {
        "p99_ms": p99_ms,
        "behind_schedule": behind,
        "errors": errors,
        "sessions_failed": failed,
    }


def test_the_highest_rate_within_the_target_must_be_held_whole(bench: ModuleType) -> None:
    # 3 s runs: 1 % of 4000/s offered is 120 messages.
    runs = {
        "s32_at_2000": _figures(3.0),
        "s32_at_4000": _figures(9.0, behind=100, errors=10),
        "s32_at_6000": _figures(8.0, behind=500),  # p99 fine, but the schedule was not kept
        "s32_at_8000": _figures(30.0),
    }
    assert bench.max_rate_within(runs, 10, 3.0) == 4000
    runs["s32_at_2000"] = _figures(3.0, failed=1)
    runs["s32_at_4000"] = _figures(11.0)
    assert bench.max_rate_within(runs, 10, 3.0) == 0


def _measured(msgs_per_s: float, p99_ms: float = 1.0, errors: int = 0) -> dict[str, Any]:
    return {
        "msgs_per_s": msgs_per_s,
        "actions_per_s": round(msgs_per_s),
        **_figures(p99_ms, errors=errors),
    }


def test_the_targets_are_read_from_the_runs(bench: ModuleType) -> None:
    figures: dict[str, Any] = {
        "seconds": 3.0,
        "uvicorn_ws_echo": {"c32": _measured(20_000)},
        "rlserve_http_single": {"c32": {"req_per_s": 3_000.0}},
        "rlserve_sessions": {"c32": _measured(12_000), "c256": _measured(11_000)},
        "rlserve_sessions_s32_at_80pct_of_ceiling": {
            "offered_msgs_per_s": 9_600,
            **_measured(9_600, p99_ms=8.0),
        },
        "rlserve_sessions_s32_open_loop": {"s32_at_8000": _measured(8_000, p99_ms=6.0)},
        "rlserve_sessions_open_loop": {"s256_at_20hz": _measured(5_120)},
    }
    derived = bench.derive(figures)
    assert derived["sessions_c32_vs_http_c32"] == 4.0
    assert derived["sessions_c32_vs_ws_echo_c32"] == 0.6
    assert derived["sessions_c32_rate_with_p99_within_10ms"] == 8000
    assert all(derived["targets_met"].values())
    figures["rlserve_sessions_open_loop"]["s256_at_20hz"]["errors"] = 1
    figures["rlserve_http_single"]["c32"]["req_per_s"] = 4_500.0
    missed = bench.derive(figures)["targets_met"]
    assert not missed["sessions_256_without_errors"]
    assert not missed["c32_at_least_3x_http_c32"]
    assert missed["c32_actions_per_s_at_least_10000"]
