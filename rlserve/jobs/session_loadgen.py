"""A WebSocket load generator (aiohttp) for ``bench/session_load.py``: many sessions at once.

``sessions`` WebSockets are opened first (the handshakes are not timed), then each one sends
the same message over and over for ``seconds``, with one message in flight per session:

* **closed loop** (``rate_per_session=None``): a session sends its next message as soon as the
  last one is answered; latency counts from each send. This measures the ceiling.
* **open loop**: each session sends on a fixed tick schedule (a game server's 20 Hz, say) and
  latency counts from each message's *scheduled* send time, so a server that falls behind pays
  for the queue it builds (no coordinated omission). A tick whose previous answer has not come
  yet waits for it; ticks still waiting when the run ends are never sent and are counted as
  ``behind_schedule``. The sessions' schedules are spread evenly over one tick, as independent
  clients would be, instead of all sending in the same millisecond.

The figures have :mod:`rlserve.jobs.loadgen`'s names, with ``msgs_per_s`` for ``req_per_s``.
aiohttp is the HTTP load generator already: its WebSocket client is as lean, and text answers
are left undecoded (``decode_text=False``), so the client spends its time on frames only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from rlserve.jobs.loadgen import _collections_paused, _figures

__all__ = ["run_sessions"]

CONNECT_TIMEOUT_S = 30.0
"""Longest one handshake may take (256 of them through Ray Serve take a few seconds)."""
GRACE_S = 5.0
"""After the run's end, how long the answers still owed may take before they count as errors."""
_ERROR = b'"error"'
"""In a text answer: the session protocol's error answer (``{"id": ..., "error": {...}}``)."""


@dataclass
class _Tally:
    """What the sessions of one run measured, together."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    behind: int = 0


async def run_sessions(
    url: str,
    message: str | bytes,
    headers: dict[str, str] | None = None,
    *,
    sessions: int,
    seconds: float,
    rate_per_session: float | None,
    rows: int = 1,
    protocols: Iterable[str] = (),
) -> dict[str, Any]:
    """Open ``sessions`` WebSockets to ``url`` and send ``message`` on each for ``seconds``.

    Args:
        url: The ``ws://`` address.
        message: Sent as a text frame (``str``) or a binary frame (``bytes``, e.g. ``.npy``).
        headers: Handshake headers (an ``authorization`` bearer token, say).
        sessions: WebSockets open at once, one sender each.
        seconds: How long the sessions send.
        rate_per_session: Messages per second per session, open loop; ``None``: closed loop.
        rows: Actions per answer (``actions_per_s`` counts ``rows`` per message).
        protocols: WebSocket subprotocols offered on the handshake.

    Returns:
        ``msgs_per_s``, ``actions_per_s``, ``p50_ms``/``p90_ms``/``p99_ms`` of the answered
        messages, ``errors`` (error answers, and sessions closed or failed mid-run: one each
        closed loop; the tick in flight and every tick still due, open loop),
        ``behind_schedule`` (ticks never sent, open loop), ``sessions_opened`` and
        ``sessions_failed`` (handshakes refused or failed; those sessions send nothing).

    Raises:
        ValueError: ``sessions``, ``seconds``, ``rate_per_session`` or ``rows`` not positive.
    """
    for name, value in (("sessions", sessions), ("seconds", seconds), ("rows", rows)):
        if value <= 0:
            raise ValueError(f"{name}: expected a positive number, got {value!r}")
    if rate_per_session is not None and rate_per_session <= 0:
        raise ValueError(
            f"rate_per_session: expected a positive rate or None, got {rate_per_session!r}"
        )
    if isinstance(message, str):
        frame, opcode = message.encode(), aiohttp.WSMsgType.TEXT  # encoded once, not per send
    else:
        frame, opcode = bytes(message), aiohttp.WSMsgType.BINARY
    tally = _Tally()
    # No pool limit (each WebSocket holds its own connection) and no total timeout (a session
    # lives for the whole run); answers have their own deadline (below).
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        offered = tuple(protocols)
        opened = await asyncio.gather(
            *(_open(client, url, headers or {}, offered) for _ in range(sessions))
        )
        sockets = [ws for ws in opened if ws is not None]
        with _collections_paused():
            start = time.perf_counter() + 0.01
            deadline = start + seconds
            hard_end = deadline + GRACE_S
            if rate_per_session is None:
                runs = [_closed(ws, frame, opcode, deadline, hard_end, tally) for ws in sockets]
            else:
                period = 1.0 / rate_per_session
                ticks = max(1, int(rate_per_session * seconds))
                runs = [
                    # Session i's ticks start i/n of a period in: the schedules are spread out.
                    _ticking(
                        ws,
                        frame,
                        opcode,
                        start + period * i / len(sockets),
                        period,
                        ticks,
                        deadline,
                        hard_end,
                        tally,
                    )
                    for i, ws in enumerate(sockets)
                ]
            await asyncio.gather(*runs)
            elapsed = min(time.perf_counter(), hard_end) - start
        # A polite close (the server answers it) frees the server's session slots before the
        # next run opens its own.
        await asyncio.gather(*(_close(ws) for ws in sockets))
    figures = _figures(tally.latencies, elapsed, rows, tally.errors, tally.behind)
    return {
        "msgs_per_s": figures.pop("req_per_s"),
        **figures,
        "sessions_opened": len(sockets),
        "sessions_failed": sessions - len(sockets),
    }


async def _open(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str], protocols: tuple[str, ...]
) -> aiohttp.ClientWebSocketResponse[bool] | None:
    """One session's handshake; ``None`` when it is refused (401, 404, 503...) or fails."""
    try:
        return await client.ws_connect(
            url,
            headers=headers,
            protocols=protocols,
            timeout=aiohttp.ClientWSTimeout(ws_close=GRACE_S),
            decode_text=False,
            autoclose=True,
        )
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None


async def _close(ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):  # gone: nothing to free
        await ws.close()


async def _exchange(
    ws: aiohttp.ClientWebSocketResponse[bool],
    frame: bytes,
    opcode: aiohttp.WSMsgType,
    hard_end: float,
) -> bool | None:
    """Send one message and wait for its answer.

    Returns:
        ``True``: answered; ``False``: an error answer; ``None``: the session is over (closed,
        failed, or no answer before ``hard_end``).
    """
    try:
        await ws.send_frame(frame, opcode)
        answer = await ws.receive(timeout=max(0.0, hard_end - time.perf_counter()))
    except (aiohttp.ClientError, OSError, RuntimeError, TimeoutError):
        return None  # RuntimeError: aiohttp's "websocket connection is closing"
    if answer.type is aiohttp.WSMsgType.BINARY:
        return True
    if answer.type is aiohttp.WSMsgType.TEXT:
        data = answer.data
        return _ERROR not in (data if isinstance(data, bytes) else data.encode())
    return None  # a close frame, or the connection dropped


async def _closed(
    ws: aiohttp.ClientWebSocketResponse[bool],
    frame: bytes,
    opcode: aiohttp.WSMsgType,
    deadline: float,
    hard_end: float,
    tally: _Tally,
) -> None:
    """Closed loop: the next message as soon as the last is answered, until ``deadline``."""
    while time.perf_counter() < deadline:
        sent = time.perf_counter()
        outcome = await _exchange(ws, frame, opcode, hard_end)
        if outcome:
            tally.latencies.append(time.perf_counter() - sent)
        else:
            tally.errors += 1
            if outcome is None:
                return


async def _ticking(
    ws: aiohttp.ClientWebSocketResponse[bool],
    frame: bytes,
    opcode: aiohttp.WSMsgType,
    first: float,
    period: float,
    ticks: int,
    deadline: float,
    hard_end: float,
    tally: _Tally,
) -> None:
    """Open loop: tick ``k`` is due at ``first + k * period``; latency counts from then."""
    for k in range(ticks):
        scheduled = first + k * period
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif time.perf_counter() > deadline:  # still waiting on earlier answers: fell behind
            tally.behind += ticks - k
            return
        outcome = await _exchange(ws, frame, opcode, hard_end)
        if outcome:
            tally.latencies.append(time.perf_counter() - scheduled)
        elif outcome is None:  # the session is gone: this tick and every one still due
            tally.errors += ticks - k
            return
        else:
            tally.errors += 1
