"""bench/serve_lstm.py: its figures from a short real run of both policies."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_it_measures_both_policies_over_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # as when run as a script
    spec = importlib.util.spec_from_file_location(
        "bench_serve_lstm", ROOT / "bench" / "serve_lstm.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.measure(0.2, rounds=1, settle_s=0.1)
    for policy in ("feed_forward", "lstm"):
        assert figures["graph"][policy]["b1_us"] > 0 and figures["graph"][policy]["b32_us"] > 0
        for count in ("c1", "c32"):
            run = figures["sessions"][policy][count]
            assert run["errors"] == 0 and run["sessions_failed"] == 0, run
            assert run["msgs_per_s"] > 0 and run["p99_ms"] >= run["p50_ms"] > 0
    assert set(figures["lstm_relative_to_feed_forward"]) == {"sessions_c1", "sessions_c32"}
    sys.modules.pop("session_load", None)
