"""An open-loop HTTP load generator (aiohttp) for ``rlserve bench`` and ``bench/serve_load.py``.

Open loop: requests are scheduled at a fixed rate whatever the server does, and latency is
measured from each request's *scheduled* send time, so a server that falls behind pays for the
queue it builds (no coordinated omission). aiohttp, not httpx: on 2 cores httpx's AsyncClient
tops out near 300 req/s at concurrency 32, far below the servers it would measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np

__all__ = ["run_load"]


@contextlib.contextmanager
def _collections_paused() -> Iterator[None]:
    """No garbage collection during a run: collect once before, none during.

    The generator's own collections (thousands of live tasks) would show up as server latency.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def run_load(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    rate: float | None,
    seconds: float,
    concurrency: int,
    rows: int,
) -> dict[str, Any]:
    """Send ``rate * seconds`` POSTs of ``body`` to ``url``, open loop.

    At most ``concurrency`` are in flight; latency counts from each request's scheduled send
    time. ``rate=None`` measures the server's ceiling instead (closed loop): ``concurrency``
    senders each send their next request as soon as the last is answered, for ``seconds``, and
    latency counts from each send.

    Returns:
        ``req_per_s``, ``actions_per_s`` (``rows`` per request), ``p50_ms``/``p90_ms``/
        ``p99_ms`` of the answered requests, ``errors`` (non-200 or failed) and
        ``behind_schedule`` (requests never sent because the server fell behind).
    """
    if rate is None:
        return await _closed_loop(url, body, headers, seconds, concurrency, rows)
    total = max(1, int(rate * seconds))
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors = 0
    not_sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=seconds)
    with _collections_paused():
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            # Set once every task exists (below): creating tens of thousands of tasks takes
            # a noticeable time, which would otherwise count as server latency.
            start = deadline = 0.0

            async def one(index: int) -> None:
                nonlocal errors, not_sent
                scheduled = start + index / rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                async with gate:
                    if time.perf_counter() > deadline:  # the server fell behind the schedule
                        not_sent += 1
                        return
                    ok = await _answered(session, url, body, headers)
                if ok:
                    latencies.append(time.perf_counter() - scheduled)
                else:
                    errors += 1

            tasks = [asyncio.ensure_future(one(i)) for i in range(total)]
            start = time.perf_counter() + 0.01
            deadline = start + seconds
            await asyncio.gather(*tasks)
            elapsed = min(time.perf_counter(), deadline + seconds) - start
    return _figures(latencies, elapsed, rows, errors, not_sent)


async def _answered(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> bool:
    """POST ``body`` and read the whole answer: whether it was a 200."""
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _closed_loop(
    url: str, body: bytes, headers: dict[str, str], seconds: float, concurrency: int, rows: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=seconds + 5.0)
    with _collections_paused():
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            start = time.perf_counter()
            deadline = start + seconds

            async def sender() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    sent = time.perf_counter()
                    if await _answered(session, url, body, headers):
                        latencies.append(time.perf_counter() - sent)
                    else:
                        errors += 1

            await asyncio.gather(*(sender() for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
    return _figures(latencies, elapsed, rows, errors, 0)


def _figures(
    latencies: list[float], elapsed: float, rows: int, errors: int, not_sent: int
) -> dict[str, Any]:
    done = len(latencies)
    ms = np.asarray(latencies) * 1000.0 if latencies else np.zeros(1)
    return {
        "req_per_s": round(done / elapsed, 1),
        "actions_per_s": round(done * rows / elapsed),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "errors": errors,
        "behind_schedule": not_sent,
    }
