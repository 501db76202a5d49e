"""``rlserve bench``: the open-loop load generator against a running service."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rlserve.cli import app
from rlserve.jobs.bench import BenchOptions, _request
from rlserve.jobs.service import free_port
from tests.helpers.served import TOKEN, served_url

__all__ = ["served_url"]  # the fixture (tests.helpers.served), shared with the evaluate tests


def test_requests_match_the_observation_space() -> None:
    from gymnasium.spaces import Box

    space = Box(-1.0, 1.0, (4,), np.float32)
    url, body, headers = _request(BenchOptions("http://x", "p", token="t"), space)
    assert url == "http://x/v1/policies/p/compute_action"
    assert len(json.loads(body)["observation"]) == 4
    assert headers["authorization"] == "Bearer t"
    url, body, headers = _request(BenchOptions("http://x", "p", rows=8, npy=True), space)
    assert url.endswith("/compute_actions") and headers["accept"] == "application/x-npy"
    assert np.load(io.BytesIO(body), allow_pickle=False).shape == (8, 4)


@pytest.mark.integration
def test_bench_loads_a_service_and_reports_figures(served_url: str) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            served_url,
            "--token",
            TOKEN,
            "--concurrency",
            "1,4",
            "--rate",
            "200",
            "--seconds",
            "0.5",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["url"].endswith("/v1/policies/cartpole/compute_action")
    for level in ("c1", "c4"):
        assert figures[level]["errors"] == 0
        assert figures[level]["req_per_s"] > 50
        assert 0 < figures[level]["p50_ms"] <= figures[level]["p99_ms"]


@pytest.mark.integration
def test_bench_npy_batches_count_actions(served_url: str) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            served_url,
            "--token",
            TOKEN,
            "--concurrency",
            "2",
            "--rate",
            "50",
            "--seconds",
            "0.5",
            "--rows",
            "64",
            "--npy",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "64 rows, npy" in result.output


@pytest.mark.integration
def test_bench_errors_are_one_line(served_url: str, tmp_path: Path) -> None:
    cases = [
        (["bench", f"http://127.0.0.1:{free_port()}"], "policy service"),
        (["bench", served_url], "401"),
        (["bench", served_url, "--token", TOKEN, "--policy", "nope"], "--policy"),
        (["bench", served_url, "--token", TOKEN, "--concurrency", "a"], "--concurrency"),
    ]
    for args, message in cases:
        out = subprocess.run(
            [sys.executable, "-m", "rlserve", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            check=False,
        )
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
