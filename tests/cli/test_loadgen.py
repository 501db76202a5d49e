"""The load generator against a real aiohttp server on 127.0.0.1 with a known answer time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from rlserve.jobs.loadgen import run_load

ANSWER_S = 0.02


async def _with_server(
    measure: Callable[[str], Awaitable[dict[str, Any]]], status: int = 200
) -> dict[str, Any]:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(ANSWER_S)
        return web.json_response({"action": 0}, status=status)

    app = web.Application()
    app.router.add_post("/act", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        return await measure(f"http://127.0.0.1:{port}/act")
    finally:
        await runner.cleanup()


def _run(status: int = 200, **load: Any) -> dict[str, Any]:
    async def measure(url: str) -> dict[str, Any]:
        return await run_load(url, b"{}", {"content-type": "application/json"}, rows=2, **load)

    return asyncio.run(_with_server(measure, status))


def test_open_loop_keeps_the_schedule_when_the_server_keeps_up() -> None:
    figures = _run(rate=100, seconds=1.0, concurrency=8)
    assert figures["errors"] == figures["behind_schedule"] == 0
    assert 90 <= figures["req_per_s"] <= 101
    assert figures["actions_per_s"] == round(2 * figures["req_per_s"])
    assert ANSWER_S * 1000 <= figures["p50_ms"] < ANSWER_S * 1000 + 30


def test_open_loop_counts_the_queue_a_slow_server_builds() -> None:
    # One request at a time, 20 ms each: at most 50 req/s for 100 req/s offered. Latency runs
    # from the scheduled send, so the waiting shows, and what never left is counted.
    figures = _run(rate=100, seconds=1.0, concurrency=1)
    assert figures["req_per_s"] <= 55
    assert figures["behind_schedule"] > 0
    assert figures["p99_ms"] > 200


def test_closed_loop_measures_the_ceiling() -> None:
    figures = _run(rate=None, seconds=1.0, concurrency=4)
    # Four senders, 20 ms per answer: about 200 req/s, latency from each send.
    assert 120 <= figures["req_per_s"] <= 205
    assert ANSWER_S * 1000 <= figures["p50_ms"] < ANSWER_S * 1000 + 30
    assert figures["behind_schedule"] == 0


def test_non_200_answers_are_errors() -> None:
    figures = _run(status=503, rate=None, seconds=0.3, concurrency=2)
    assert figures["errors"] > 0
    assert figures["req_per_s"] == 0
