"""Benchmark: the rlserve Serve app under load, against baselines, on 127.0.0.1.

Two kinds of run (aiohttp load generator, :mod:`rlserve.jobs.loadgen`):

* **ceilings**, closed loop: ``concurrency`` senders each send their next request as soon as
  the last is answered, for ``--seconds``; req/s (or actions/s) and latency from each send;
* **latency below saturation**, open loop: requests scheduled at fixed rates with at most 32 in
  flight; latency from each request's *scheduled* send time, so queueing is counted.

Measured in the same run:

* baseline (c): a plain uvicorn + starlette echo app (the Python HTTP ceiling, and this load
  generator's own ceiling): ceilings at concurrency 1 and 32, and open-loop rates;
* baseline (a): a no-op Ray Serve deployment with default settings;
* baseline (b): an unbatched deployment answering one observation per call from the same ONNX
  model with argmax (what RLlib's Ray Serve example does);
* (d) rlserve's FastAPI app in one plain uvicorn process, without Ray Serve (what Serve's
  request path costs; not a way rlserve serves);
* rlserve (``rlserve serve`` with its defaults: one replica), single-observation
  ``compute_action``: ceilings at concurrency 1 and 32 and open-loop rates (the highest rate
  answered with p99 <= 25 ms is reported, also as a fraction of the uvicorn ceiling); then the
  same with one replica per core;
* rlserve, 1024-observation ``compute_actions`` as JSON and as npy (actions/s).

Prints one JSON line. ``python bench/serve_load.py [--seconds 3] [--artifact DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
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

import numpy as np

from rlserve.jobs.loadgen import run_load
from serving import wire

OBS = [0.01, -0.02, 0.03, 0.04]
ECHO_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
async def echo(request):
    await request.body()
    return JSONResponse({"action": 0})
app = Starlette(routes=[Route("/echo", echo, methods=["POST"])])
"""


PLAIN_APP = """
from serving import PolicyRegistry, create_app
registry = PolicyRegistry.from_paths({{"cartpole": {artifact!r}}}, intra_op_num_threads=1)
app = create_app(registry)
"""


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
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.2)
        time.sleep(1.0)
        yield base
    finally:
        server.terminate()
        server.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _artifact(root: Path) -> Path:
    from exporters import export_checkpoint
    from training.tuned_examples import load_tuned_example

    with load_tuned_example("cartpole_ppo").config.debugging(seed=0).build() as algo:
        algo.train()
        checkpoint = algo.save(str(root / "checkpoint")).checkpoint.path
    return export_checkpoint(checkpoint, root / "artifact", ["onnx"])


def _baselines(artifact: Path) -> tuple[Any, Any]:
    from ray import serve
    from starlette.requests import Request

    @serve.deployment
    class Noop:
        async def __call__(self, request: Request) -> dict[str, int]:
            await request.body()
            return {"action": 0}

    @serve.deployment
    class Unbatched:
        def __init__(self, path: str) -> None:
            from exporters import load_artifact

            self.policy = load_artifact(path).onnx_policy()

        async def __call__(self, request: Request) -> dict[str, int]:
            obs = np.asarray((await request.json())["observation"], np.float32)[None]
            return {"action": int(np.argmax(self.policy.run([obs])[0][0]))}

    return Noop.bind(), Unbatched.bind(str(artifact))  # type: ignore[attr-defined]


P99_TARGET_MS = 25
BELOW_SATURATION_RATES = (1000, 2000, 2500, 3000, 3500, 4000)


@contextlib.contextmanager
def _rlserve(artifact: Path, *options: str) -> Iterator[str]:
    """``rlserve serve ARTIFACT --name cartpole OPTIONS`` until the block ends; its base URL."""
    port = _free_port()
    command = [sys.executable, "-m", "rlserve", "serve", str(artifact), "--name", "cartpole"]
    server = subprocess.Popen(
        [*command, "--port", str(port), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if line.startswith("serving ") or line.startswith("error"):
                break
        base = f"http://127.0.0.1:{port}"
        body = json.dumps({"observation": OBS}).encode()
        headers = {"content-type": "application/json"}
        url = f"{base}/v1/policies/cartpole/compute_action"
        asyncio.run(run_load(url, body, headers, rate=500, seconds=1, concurrency=8, rows=1))
        time.sleep(2.0)  # the warm-up's connections close
        yield base
    finally:
        # SIGTERM stops rlserve like Ctrl-C, also when this benchmark runs in the background
        # (where SIGINT is ignored by its children).
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=120)


def _below_saturation(
    run: Any, url: str, rates: tuple[int, ...] = BELOW_SATURATION_RATES
) -> dict[str, Any]:
    """Concurrency 32 at fixed offered rates (first: a saturated run leaves a burst behind)."""
    body = json.dumps({"observation": OBS}).encode()
    headers = {"content-type": "application/json"}
    return {f"c32_at_{r}": run(url, body, headers, 32, rate=r) for r in rates}


def _max_rate_within(runs: dict[str, Any], p99_ms: float) -> int:
    """The highest offered rate served whole (under 1 % behind schedule) with p99 <= p99_ms."""
    ok = [
        int(name.rsplit("_", 1)[1])
        for name, figures in runs.items()
        if figures["p99_ms"] <= p99_ms
        and figures["behind_schedule"] + figures["errors"] <= 0.01 * figures["req_per_s"]
    ]
    return max(ok, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--artifact", help="artifact directory (default: train and export one)")
    args = parser.parse_args()
    import ray
    from ray import serve

    figures: dict[str, Any] = {"bench": "serve_load", "seconds": args.seconds}
    json_headers = {"content-type": "application/json"}
    single = json.dumps({"observation": OBS}).encode()

    def run(
        url: str,
        body: bytes,
        headers: dict[str, str],
        concurrency: int,
        rows: int = 1,
        rate: float | None = None,
    ) -> dict[str, Any]:
        return asyncio.run(
            run_load(
                url,
                body,
                headers,
                rate=rate,
                seconds=args.seconds,
                concurrency=concurrency,
                rows=rows,
            )
        )

    # (c) the Python HTTP ceiling, and this client's own ceiling.
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "echo_app.py").write_text(ECHO_APP)
        with _uvicorn(root, "echo_app") as base:
            url = f"{base}/echo"
            figures["uvicorn_echo_single_below_saturation"] = _below_saturation(
                run, url, (*BELOW_SATURATION_RATES, 6000, 8000)
            )
            figures["uvicorn_echo"] = {f"c{c}": run(url, single, json_headers, c) for c in (1, 32)}

        artifact = Path(args.artifact) if args.artifact else _artifact(root)
        # (d) rlserve's own FastAPI app in one plain uvicorn process, no Ray Serve: what Serve's
        # request path costs (not a way rlserve serves; no batching, no replica limits).
        (root / "plain_app.py").write_text(PLAIN_APP.format(artifact=str(artifact)))
        with _uvicorn(root, "plain_app") as base:
            url = f"{base}/v1/policies/cartpole/compute_action"
            figures["rlserve_app_without_serve"] = {
                f"c{c}": run(url, single, json_headers, c) for c in (1, 32)
            }

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if not ray.is_initialized():
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                configure_logging=False,
                log_to_driver=False,
            )
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base = f"http://127.0.0.1:{port}"
        try:
            noop, unbatched = _baselines(artifact)
            serve.run(noop, name="noop", route_prefix="/noop")
            figures["serve_noop_default"] = {
                f"c{c}": run(f"{base}/noop", single, json_headers, c) for c in (1, 32)
            }
            serve.delete("noop")
            serve.run(unbatched, name="unbatched", route_prefix="/unbatched")
            figures["serve_unbatched_onnx"] = {
                f"c{c}": run(f"{base}/unbatched", single, json_headers, c) for c in (1, 32)
            }
            serve.delete("unbatched")
        finally:
            serve.shutdown()  # type: ignore[no-untyped-call]
            ray.shutdown()
        time.sleep(5.0)  # let the baselines' Ray processes exit before measuring rlserve
        # rlserve as users run it: `rlserve serve` with its defaults (HAProxy ingress, one
        # replica), then with one replica per core.
        with _rlserve(artifact) as base:
            action_url = f"{base}/v1/policies/cartpole/compute_action"
            figures["rlserve_single_below_saturation"] = _below_saturation(run, action_url)
            figures["rlserve_single"] = {
                f"c{c}": run(action_url, single, json_headers, c) for c in (1, 32)
            }
            batch = np.tile(np.asarray(OBS, np.float32), (1024, 1))
            actions_url = f"{base}/v1/policies/cartpole/compute_actions"
            json_body = json.dumps({"observations": batch.tolist()}).encode()
            buffer = io.BytesIO()
            np.save(buffer, batch, allow_pickle=False)
            npy_headers = {"content-type": wire.NPY, "accept": wire.NPY}
            figures["rlserve_batch1024"] = {
                "json": run(actions_url, json_body, json_headers, 4, rows=1024),
                "npy": run(actions_url, buffer.getvalue(), npy_headers, 4, rows=1024),
                "npy_c8": run(actions_url, buffer.getvalue(), npy_headers, 8, rows=1024),
            }
        replicas = os.cpu_count() or 1
        figures["rlserve_replicas_per_core"] = replicas
        with _rlserve(artifact, "--replicas", str(replicas)) as base:
            action_url = f"{base}/v1/policies/cartpole/compute_action"
            figures["rlserve_per_core_single_below_saturation"] = _below_saturation(run, action_url)
            figures["rlserve_per_core_single"] = {"c32": run(action_url, single, json_headers, 32)}
    # Ceilings (closed loop, concurrency 32) against the baselines; then the highest open-loop
    # rate answered with p99 within the target, against uvicorn's ceiling.
    unbatched32 = max(1e-9, figures["serve_unbatched_onnx"]["c32"]["req_per_s"])
    uvicorn32 = max(1e-9, figures["uvicorn_echo"]["c32"]["req_per_s"])
    for key in ("rlserve", "rlserve_per_core"):
        ceiling = figures[f"{key}_single"]["c32"]["req_per_s"]
        figures[f"{key}_c32_vs_unbatched"] = round(ceiling / unbatched32, 2)
        figures[f"{key}_c32_vs_uvicorn"] = round(ceiling / uvicorn32, 3)
    for key in ("uvicorn_echo", "rlserve", "rlserve_per_core"):
        rate = _max_rate_within(figures[f"{key}_single_below_saturation"], P99_TARGET_MS)
        figures[f"{key}_c32_rate_with_p99_within_{P99_TARGET_MS}ms"] = rate
        figures[f"{key}_c32_rate_with_p99_within_{P99_TARGET_MS}ms_vs_uvicorn"] = round(
            rate / uvicorn32, 3
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
