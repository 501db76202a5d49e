"""Stop signals for a service that ``rlserve`` runs: SIGINT and SIGTERM stop it at any moment.

:class:`StopSignals` turns SIGINT and SIGTERM into ``KeyboardInterrupt`` at any moment of a
service's life, start-up included, and keeps Ray's drivers from replacing that handler
(``ray.init`` installs ``sys.exit`` on SIGTERM, and its node object a drain-then-exit(1) handler,
which left a start-up half done).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["StopSignals", "take_stop_signals_back"]

_STOP = (signal.SIGINT, signal.SIGTERM)
_NO_DUMPS = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"  # read when the core worker starts


def take_stop_signals_back() -> None:
    """Undo what a parent process may have done to SIGINT and SIGTERM before starting us.

    A process inherits ignored signals and its blocked-signal mask through ``exec``: a shell
    without job control starts background jobs (``rlserve train &``) with SIGINT ignored, and
    a parent that blocked signals in the thread that forked passes the mask on. Python then
    installs no Ctrl-C handler at all, and ``kill -INT`` is silently dropped. The CLI calls this
    first thing, so that a stop signal always stops it.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class StopSignals:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` in the main thread, from start-up to stop.

    Use it as a context manager around start, serve and stop, installed before anything starts.
    A signal raises at once wherever the main thread is; in case code it interrupts swallows
    the exception, :meth:`check` raises again at the next step of the start-up. Once
    :meth:`stopping` is entered, further signals are only noted, so that the clean-up itself is
    not interrupted (it is bounded; see :func:`~rlserve.jobs.runtime_dirs.end_processes`).
    """

    _active: StopSignals | None = None

    def __init__(self) -> None:
        self.received: int | None = None
        """The first stop signal's number, or ``None``."""
        self._stopping = False
        self._previous: dict[int, object] = {}
        self._previous_hook = sys.unraisablehook

    @classmethod
    def active(cls) -> StopSignals | None:
        """The guard installed in this process, if any."""
        return cls._active

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if not self._stopping:
            raise KeyboardInterrupt

    def _unraisable(self, unraisable: Any) -> None:
        # A signal can land inside a callback whose exceptions Python cannot propagate (the
        # logging module's fork hook while ray.init forks, a finaliser): the interrupt is then
        # "ignored" with a traceback on stderr. The stop itself is not lost (check() raises it
        # again at the next step), so the traceback is noise; anything else is reported.
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and self.received is not None:
            return
        self._previous_hook(unraisable)

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a stop signal came and the stop has not begun."""
        if self.received is not None and not self._stopping:
            raise KeyboardInterrupt

    def reinstall(self) -> None:
        """Take SIGINT and SIGTERM back from code that replaced the handler.

        Also below Python: Ray's core worker puts absl's failure-signal handler in front of
        Python's at the C level (still reporting ours to ``signal.getsignal``). That one prints
        a stack dump for a plain SIGTERM and made the process end with SIGABRT after a clean
        stop; ``signal.signal`` puts Python's own handler back in its place.
        """
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    @contextlib.contextmanager
    def stopping(self) -> Iterator[None]:
        """While inside, signals are noted but raise nothing (the clean-up runs to its end)."""
        self._stopping = True
        yield

    @contextlib.contextmanager
    def ray_leaves_sigterm_alone(self) -> Iterator[None]:
        """Keep ``ray.init`` from installing its own SIGTERM handlers while it runs.

        Two of them: Ray's Python one, through ``ray._private.utils.set_sigterm_handler``,
        and absl's failure-signal handler, which the driver's core worker puts in front of
        Python's at the C level part-way through ``ray.init``. A SIGTERM between that moment
        and ``ray.init``'s return went to absl: a stack dump, then the process ended with
        SIGABRT after an otherwise clean stop (seen in CI, once in some dozens of runs).
        ``ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER`` (Ray's switch, meant for JVM
        hosts) is set for this driver only, not exported, so Ray's worker processes keep their
        crash dumps. Both are private names: if a Ray version renames them, :meth:`reinstall`
        after ``ray.init`` still takes the handlers back, and only a signal inside
        ``ray.init`` goes to Ray's.
        """
        try:
            import ray._private.utils as ray_utils
            from ray._private import ray_constants
        except ImportError:  # pragma: no cover - another Ray layout
            yield
            return
        original = getattr(ray_utils, "set_sigterm_handler", None)
        if original is not None:
            ray_utils.set_sigterm_handler = lambda handler: None
        no_dumps = getattr(ray_constants, _NO_DUMPS, None)
        if no_dumps is not None:
            setattr(ray_constants, _NO_DUMPS, True)
        try:
            yield
        finally:
            if original is not None:
                ray_utils.set_sigterm_handler = original
            if no_dumps is not None:
                setattr(ray_constants, _NO_DUMPS, no_dumps)
            self.reinstall()

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        StopSignals._active = self
        return self

    def __exit__(self, *exc: object) -> None:
        StopSignals._active = None
        sys.unraisablehook = self._previous_hook
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
