"""``init_ray``: a private Ray, the opt-in dashboard on loopback, clear errors for an address."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_the_dashboard_is_opt_in_and_listens_on_loopback_only() -> None:
    code = """
import json, logging, psutil, ray
from rlserve.jobs.local_ray import init_ray
logging.basicConfig()
init_ray(None, dashboard=True, num_cpus=1, log_to_driver=False)
def is_dashboard(pid):
    try:
        parts = psutil.Process(pid).cmdline()
        return any(part.endswith("dashboard/dashboard.py") for part in parts)
    except psutil.Error:
        return False
binds = sorted({c.laddr.ip for c in psutil.net_connections("tcp")
                if c.status == "LISTEN" and c.pid and is_dashboard(c.pid)})

print(json.dumps({"binds": binds}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["binds"] == ["127.0.0.1"]
    assert "never expose it" in out.stderr  # the warning that comes with it


@pytest.mark.parametrize("address", ["127.0.0.1:1", "localhost:1"])
def test_an_address_nothing_listens_on_fails_at_once(address: str) -> None:
    code = f"from rlserve.jobs.local_ray import init_ray; init_ray({address!r})"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 1
    assert f"RayClusterError: cannot reach the Ray cluster at {address}" in out.stderr
