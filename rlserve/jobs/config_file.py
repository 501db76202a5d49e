"""Running a Ray Serve config file (``rlserve serve --config FILE``) with rlserve's settings.

The file is checked before anything starts: it must be YAML with an ``applications`` list, and
an ``http_options.host`` beyond loopback needs ``args.token`` in every application (the same rule
as ``--host`` without ``--token``). Serve's own runner (``serve run FILE``) then runs in a child
process, its environment prepared as for :func:`~rlserve.jobs.service.start_service`'s own Ray
(loopback listeners, the chosen ingress, a runtime directory: see
:func:`~rlserve.jobs.service.prepare_ingress`); SIGINT and SIGTERM here reach it as SIGINT, and the
runtime directory is removed once it has ended.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rlserve.jobs.runtime_dirs import end_processes, processes_of, remove_runtime_dirs, runtime_dirs
from rlserve.jobs.service import ServiceError, is_loopback, prepare_ingress

__all__ = ["STOP_GRACE_S", "run_config_file"]

STOP_GRACE_S = 30.0
"""How long Serve's runner gets to stop after a forwarded Ctrl-C before it is killed."""

logger = logging.getLogger(__name__)


def _check_config_file(path: str) -> None:
    """Refuse a Serve config file that cannot work or would expose the API without a token."""
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise ServiceError(f"--config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ServiceError(f"--config {path}: not YAML: {err}") from None
    apps = config.get("applications") if isinstance(config, dict) else None
    if not isinstance(apps, list) or not apps:
        raise ServiceError(f"--config {path}: expected a Serve config with an 'applications' list")
    host = str((config.get("http_options") or {}).get("host", "127.0.0.1"))
    for app in apps:
        args = app.get("args") if isinstance(app, dict) else None
        if not is_loopback(host) and not (isinstance(args, dict) and args.get("token")):
            raise ServiceError(
                f"--config {path}: http_options.host {host} exposes the API beyond this "
                "machine: every application needs args.token"
            )


def run_config_file(path: str, ingress: str = "haproxy") -> int:
    """Run a Ray Serve config file (``serve run FILE``) in the foreground until Ctrl-C.

    The file is checked first; Serve's own runner then starts a private Ray with rlserve's
    settings (loopback listeners, the chosen ingress) and deploys every application in it.

    Returns:
        The runner's exit code (0 after Ctrl-C or SIGTERM).

    Raises:
        ServiceError: For a missing or malformed file, or a public host without a token.
    """
    if ingress not in ("haproxy", "proxy"):
        raise ServiceError(f"--ingress: expected haproxy or proxy, got {ingress!r}")
    _check_config_file(path)
    runner = shutil.which("serve", path=str(Path(sys.executable).parent)) or shutil.which("serve")
    if runner is None:
        raise ServiceError("Ray Serve's `serve` command is not installed (pip install ray[serve])")
    prepare_ingress(ingress)
    process = subprocess.Popen([runner, "run", path])
    asked: list[float] = []  # when a stop was first forwarded
    killed = False

    def _forward(signum: int, frame: object) -> None:
        asked.append(time.monotonic())
        process.send_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, _forward)
    try:
        while True:
            try:
                code = process.wait(timeout=1.0)
                break
            except KeyboardInterrupt:
                _forward(signal.SIGINT, None)
            except subprocess.TimeoutExpired:
                if asked and time.monotonic() - asked[0] > STOP_GRACE_S:
                    # Serve's runner did not stop in time (its shutdown can hang): end it and
                    # what can be found of its processes; the runtime directory stays, so the
                    # next start removes the rest as a SIGKILL's leftovers.
                    logger.warning("serve run did not stop within %g s: killing it", STOP_GRACE_S)
                    killed = True
                    process.kill()
                    process.wait()
                    for directory in runtime_dirs():
                        end_processes(processes_of(directory, mine=True))
                    return 0
        return 0 if code in (0, -signal.SIGINT, 130) or asked else code
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            process.kill()
        if not killed:
            remove_runtime_dirs()
