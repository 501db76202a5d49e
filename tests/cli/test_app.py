"""The rlserve command line: --help and --version, in-process and as an installed script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import rlserve
from rlserve.cli import app

runner = CliRunner()


def test_version_option_prints_the_installed_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"rlserve {rlserve.__version__}"
    assert rlserve.__version__ != "0.0.0+unknown"


def test_help_lists_the_application() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Train reinforcement-learning policies" in result.stdout


@pytest.mark.integration
def test_console_script_is_installed_and_runs() -> None:
    exe = shutil.which("rlserve", path=str(Path(sys.executable).parent))
    assert exe is not None, "the rlserve console script is not installed in this environment"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("rlserve ")
    out = subprocess.run(
        [sys.executable, "-m", "rlserve", "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage" in out.stdout


@pytest.mark.integration
def test_ray_session_fixture_runs_remote_tasks(ray_session: Any) -> None:
    ray = ray_session

    @ray.remote
    def square(x: int) -> int:
        return x * x

    assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
    assert ray.cluster_resources()["CPU"] == 2.0
