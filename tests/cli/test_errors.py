"""The CLI's one error boundary: user errors are one line and exit 2, bugs show a traceback."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from formats.errors import RlserveError
from rlserve.cli import app

runner = CliRunner()
COMMANDS = ("train", "tune", "export", "serve", "evaluate", "bench", "demo", "ingress-env")


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise ZeroDivisionError("a bug")


def test_a_user_error_is_one_line_and_exits_2(tmp_path: Any) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path / "missing")])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "no such file or directory" in lines[0]
    assert "Traceback" not in result.stderr


def test_an_unexpected_exception_shows_its_traceback_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import rlserve.jobs.evaluation

    monkeypatch.setattr(rlserve.jobs.evaluation, "run_evaluation", _boom)
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" in result.stderr
    assert "ZeroDivisionError: a bug" in result.stderr


def test_an_unexpected_exception_in_train_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    import rlserve.jobs.training

    monkeypatch.setattr(rlserve.jobs.training, "run_training", _boom)
    result = runner.invoke(app, ["train", "--stop-iters", "1"])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr


def test_debug_shows_the_traceback_of_a_user_error(tmp_path: Any) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path / "missing"), "--log-level", "DEBUG"])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_a_bad_set_value_is_a_user_error() -> None:
    from rlserve.jobs.training import parse_set_options

    with pytest.raises(RlserveError, match="expected key=value"):
        parse_set_options(["lr"])
    result = runner.invoke(app, ["train", "--set", "lr"])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_an_unknown_log_level_is_a_user_error() -> None:
    result = runner.invoke(app, ["export", "somewhere", "--log-level", "LOUD"])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.strip() == ("error: --log-level 'LOUD': choose DEBUG, INFO, WARN or ERROR")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_log_level(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "--log-level" in result.stdout


def test_bench_without_aiohttp_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # import aiohttp now fails
    monkeypatch.delitem(sys.modules, "rlserve.jobs.loadgen", raising=False)
    result = runner.invoke(app, ["bench", "http://127.0.0.1:9"])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'rlserve[bench]'" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_command_exit_status_passes_the_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    import rlserve.jobs.evaluation

    def gate(*args: Any, **kwargs: Any) -> Any:
        raise typer.Exit(code=1)  # like evaluate's --min-return gate

    monkeypatch.setattr(rlserve.jobs.evaluation, "run_evaluation", gate)
    result = runner.invoke(app, ["evaluate", ".", "--log-level", "DEBUG"])
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr


def test_a_usage_error_raised_in_a_command_passes_the_boundary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """typer >= 0.2x bundles its own click: its BadParameter is no click.ClickException."""
    import typer

    import rlserve.jobs.evaluation

    def bad(*args: Any, **kwargs: Any) -> Any:
        raise typer.BadParameter("expected a path", param_hint="'SOURCE'")

    monkeypatch.setattr(rlserve.jobs.evaluation, "run_evaluation", bad)
    result = runner.invoke(app, ["evaluate", "."])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Invalid value for 'SOURCE': expected a path" in result.stderr
    assert "Traceback" not in result.stderr
