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

import shutil
import sys
from pathlib import Path

from rlserve.jobs.runtime_dirs import remove_runtime_dirs
from rlserve.jobs.service import ServiceError, is_loopback, prepare_ingress

__all__ = ["run_config_file"]


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
    import signal
    import subprocess

    if ingress not in ("haproxy", "proxy"):
        raise ServiceError(f"--ingress: expected haproxy or proxy, got {ingress!r}")
    _check_config_file(path)
    runner = shutil.which("serve", path=str(Path(sys.executable).parent)) or shutil.which("serve")
    if runner is None:
        raise ServiceError("Ray Serve's `serve` command is not installed (pip install ray[serve])")
    prepare_ingress(ingress)
    process = subprocess.Popen([runner, "run", path])

    def _forward(signum: int, frame: object) -> None:
        process.send_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, _forward)
    try:
        while True:
            try:
                code = process.wait()
                break
            except KeyboardInterrupt:
                process.send_signal(signal.SIGINT)
        return 0 if code in (0, -signal.SIGINT, 130) else code
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            process.kill()
        remove_runtime_dirs()
