"""The README's quick-start block runs as written (with a free port instead of 8000)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlserve.jobs.service import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _quickstart() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- quickstart -->\n```bash\n(.*?)```", text, re.DOTALL)
    assert match, "README.md has no quick-start block"
    return match.group(1)


def test_the_readme_quickstart_block_names_every_step() -> None:
    block = _quickstart()
    for step in (
        "rlserve train",
        "rlserve export",
        "rlserve evaluate",
        "rlserve serve",
        "curl",
        "PolicyClient",
        "rlserve bench",
    ):
        assert step in block, step


def test_the_readme_quickstart_runs(tmp_path: Path) -> None:
    port = str(free_port())
    script = _quickstart().replace("8000", port)
    # `source .venv/bin/activate` of this checkout, wherever the test runs from.
    script = script.replace(
        "source .venv/bin/activate", f"export PATH={Path(sys.executable).parent}:$PATH"
    )
    (tmp_path / "training").symlink_to(ROOT / "training")  # tuned examples by path, as in a clone
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "best checkpoint:" in out.stdout
    assert '"ready":true' in out.stdout
    assert '"policy":"cartpole"' in out.stdout
    assert "policy='cartpole'" in out.stdout  # the client's ActionResult
    assert "req/s" in out.stdout
    assert (tmp_path / "runs/quickstart/artifact/manifest.json").is_file()
