"""``rlserve bench``: the open-loop load generator against a running policy service."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from formats.errors import RlserveError
from serving.wire import NPY

__all__ = ["BenchError", "BenchOptions", "run_bench"]


class BenchError(RlserveError, ValueError):
    """A bad option, a service that cannot be loaded, or aiohttp missing (the message says why)."""


def _load_generator() -> Any:
    """:func:`rlserve.jobs.loadgen.run_load`, or a :class:`BenchError` without aiohttp."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise BenchError(
            "rlserve bench needs aiohttp, which is not installed: pip install 'rlserve[bench]'"
        ) from None
    from rlserve.jobs.loadgen import run_load

    return run_load


@dataclass(frozen=True)
class BenchOptions:
    """What to send and how hard.

    Attributes:
        url: Service base URL, e.g. ``http://127.0.0.1:8000``.
        policy: Policy name (``None``: the first one the service lists).
        token: Bearer token, if the service requires one.
        concurrency: In-flight request limits, one load run each.
        rate: Scheduled requests per second (open loop).
        seconds: Duration of each run.
        rows: Observations per request (1: ``compute_action``; more: ``compute_actions``).
        npy: Send ``compute_actions`` batches as npy (and ask for npy back).
        seed: Seed of the sampled observation.
    """

    url: str
    policy: str | None = None
    token: str | None = None
    concurrency: tuple[int, ...] = (1, 32)
    rate: float = 2000.0
    seconds: float = 5.0
    rows: int = 1
    npy: bool = False
    seed: int = 0


def _request(options: BenchOptions, space: Any) -> tuple[str, bytes, dict[str, str]]:
    """The route, body and headers every request of the run repeats."""
    from formats.leaves import flatten_leaves, obs_to_leaves
    from serving.client import to_jsonable

    space.seed(options.seed)
    base = f"{options.url.rstrip('/')}/v1/policies/{options.policy}"
    headers = {"content-type": "application/json"}
    if options.token:
        headers["authorization"] = f"Bearer {options.token}"
    if options.rows == 1 and not options.npy:
        body = json.dumps({"observation": to_jsonable(space.sample())}).encode()
        return f"{base}/compute_action", body, headers
    batch = [space.sample() for _ in range(options.rows)]
    if options.npy:
        if len(flatten_leaves(space)) != 1:
            raise BenchError("--npy needs a single-array observation space")
        array = np.stack([obs_to_leaves(space, obs)[0] for obs in batch])
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        headers.update({"content-type": NPY, "accept": NPY})
        return f"{base}/compute_actions", buffer.getvalue(), headers
    body = json.dumps({"observations": [to_jsonable(obs) for obs in batch]}).encode()
    return f"{base}/compute_actions", body, headers


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Load the service once per concurrency level and return the figures.

    Raises:
        BenchError: For bad options or a service that cannot be reached or refuses the
            sample request (the message says why), or without aiohttp.
    """
    import httpx

    from formats.spaces import space_from_json
    from serving.client import PolicyClient, PolicyError

    run_load = _load_generator()

    if options.rows < 1 or options.rate <= 0 or options.seconds <= 0:
        raise BenchError("--rows, --rate and --seconds must be positive")
    if not options.concurrency or min(options.concurrency) < 1:
        raise BenchError("--concurrency: expected positive integers, e.g. 1,32")
    try:
        with PolicyClient(options.url, token=options.token, retries=0) as client:
            names = [p["name"] for p in client.policies()]
            policy = options.policy or (names[0] if names else None)
            if policy is None or policy not in names:
                raise BenchError(f"--policy: {options.url} serves {names}, not {policy!r}")
            description = client.policy(policy)
    except (httpx.HTTPError, PolicyError) as err:
        raise BenchError(f"policy service {options.url}: {err}") from None
    options = BenchOptions(**{**options.__dict__, "policy": policy})
    url, body, headers = _request(options, space_from_json(description["observation_space"]))
    figures: dict[str, Any] = {
        "bench": "rlserve_bench",
        "url": url,
        "rows": options.rows,
        "format": "npy" if options.npy else "json",
        "rate": options.rate,
        "seconds": options.seconds,
    }
    for concurrency in options.concurrency:
        figures[f"c{concurrency}"] = asyncio.run(
            run_load(
                url,
                body,
                headers,
                rate=options.rate,
                seconds=options.seconds,
                concurrency=concurrency,
                rows=options.rows,
            )
        )
    return figures
