"""``rlserve serve`` refusals and the one-command ``rlserve demo`` (subprocess)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RLSERVE = shutil.which("rlserve", path=str(Path(sys.executable).parent)) or "rlserve"


@pytest.fixture()
def artifact(cartpole_artifact: Path) -> Path:
    return cartpole_artifact


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RLSERVE, *args], capture_output=True, text=True, timeout=240, cwd=cwd, check=False
    )


def test_serve_refuses_a_public_address_without_a_token(artifact: Path, tmp_path: Path) -> None:
    out = _run("serve", str(artifact), "--host", "0.0.0.0", cwd=tmp_path)
    assert out.returncode == 2
    assert "--token is required" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_a_port_in_use(artifact: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _run("serve", str(artifact), "--port", str(port), cwd=tmp_path)
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr


def test_serve_refuses_a_corrupt_artifact(artifact: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    (broken / "model.onnx").write_bytes(b"nope")
    out = _run("serve", str(broken), cwd=tmp_path)
    assert out.returncode == 2
    assert "model.onnx" in out.stderr


def test_demo_trains_exports_serves_and_evaluates(tmp_path: Path) -> None:
    out = _run("demo", "--episodes", "1", "--workdir", str(tmp_path / "demo"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "best checkpoint:" in out.stdout
    assert "evaluation over HTTP: 1 episodes, mean return" in out.stdout
    mean = float(out.stdout.split("mean return ")[1].split()[0])
    assert mean >= 400  # the tuned example is solved before it is served
    assert (tmp_path / "demo" / "artifact" / "manifest.json").is_file()
