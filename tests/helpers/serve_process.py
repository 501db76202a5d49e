"""``rlserve serve`` as a subprocess for tests: started, waited for, stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def serving(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``python -m rlserve serve ARGS`` until it prints ``serving cartpole... at``; SIGINT after.

    Ray settings of the calling environment are left out, so the service starts its own Ray.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlserve", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**clean, **(env or {})},
        cwd=cwd,
    )
    assert proc.stdout is not None
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("serving ") or not line:
                break
        # "serving NAME[, NAME...] at URL": the policies' names, sorted (cartpole among them).
        assert lines[-1].startswith("serving cartpole"), "".join(lines)[-3000:]
        assert " at http" in lines[-1], "".join(lines)[-3000:]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=90)
        proc.stdout.close()
