"""A multi-agent checkpoint exported (an artifact per policy) and served in one app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rlserve.cli import app as cli
from serving import PolicyClient, PolicyRegistry, create_app
from tests.helpers.configs import tiny_multi_agent_ppo
from tests.helpers.threaded_server import ThreadedServer

OBSERVATIONS = [[0.01, 0.02, -0.03, 0.04], [-0.2, 0.1, 0.05, -0.3], [0.0, 0.0, 0.0, 0.0]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Any]]]:
    """A two-policy checkpoint and each policy's deterministic actions on OBSERVATIONS."""
    with tiny_multi_agent_ppo().build() as algo:
        algo.train()
        path = Path(algo.save(str(tmp_path_factory.mktemp("ma") / "ckpt")).checkpoint.path)
        actions = {
            pid: [algo.compute_single_action(o, policy_id=pid, explore=False) for o in OBSERVATIONS]
            for pid in ("p0", "p1")
        }
    return path, actions


def test_every_policy_is_exported_and_served_under_its_name(
    trained: tuple[Path, dict[str, list[Any]]], tmp_path: Path
) -> None:
    checkpoint, expected = trained
    result = CliRunner().invoke(
        cli, ["export", str(checkpoint), "--out", str(tmp_path / "art"), "--format", "onnx"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["p0", "p1"]
    registry = PolicyRegistry.from_paths({pid: tmp_path / "art" / pid for pid in ("p0", "p1")})
    assert {registry.get(pid).artifact.manifest.policy_name for pid in ("p0", "p1")} == {  # type: ignore[union-attr]
        "p0",
        "p1",
    }
    server = ThreadedServer(create_app(registry))
    try:
        with PolicyClient(server.http) as client:
            assert sorted(p["name"] for p in client.policies()) == ["p0", "p1"]
            for pid in ("p0", "p1"):
                served = [client.compute_action(pid, o).action for o in OBSERVATIONS]
                assert served == expected[pid], pid
    finally:
        server.stop()
    # One policy, named; an unknown one is refused, naming what the checkpoint holds.
    args = ["export", str(checkpoint), "--out", str(tmp_path / "one"), "--format", "onnx"]
    one = CliRunner().invoke(cli, [*args, "--policy", "p1"])
    assert one.exit_code == 0, one.output
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["p1"]
    bad = CliRunner().invoke(cli, ["export", str(checkpoint), "--policy", "p9"])
    assert bad.exit_code == 2
    assert "no policies ['p9']" in bad.output and "p0" in bad.output
