"""``LearnerThread``: the learner of an asynchronous algorithm, beside the driver's sampling loop.

IMPALA's driver keeps taking fragments from the runners and resending their requests while
the learner trains; a thread of its own lets both go on at once (torch releases the GIL in its
kernels, and the driver mostly waits on Ray). Between them sits a bounded queue of train
batches: when the learner falls behind, the oldest waiting batch is dropped, so it trains on
fresh data instead of an ever longer backlog (and the drop is counted, never hidden).

Only the thread touches the module while it runs; the driver gets the weights as copies
(:meth:`LearnerThread.take_weights`) and calls :meth:`LearnerThread.drain` before anything
else reads the module (results, checkpoints, evaluation, actions).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["LearnerThread"]

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
_STOP = object()


class LearnerThread(threading.Thread, Generic[Item]):
    """Runs ``update(item)`` on queued train batches, one at a time, in order.

    Args:
        update: One gradient step on a train batch; returns its metrics.
        snapshot: A copy of the module's state, taken in this thread right after an update.
        version: The number of updates so far (the version a snapshot is tagged with).
        queue_size: Train batches that may wait.
        broadcast_interval: Take a weights snapshot after this many updates.
    """

    def __init__(
        self,
        update: Callable[[Item], dict[str, float]],
        snapshot: Callable[[], dict[str, Any]],
        version: Callable[[], int],
        *,
        queue_size: int,
        broadcast_interval: int,
    ) -> None:
        super().__init__(name="rlserve-learner", daemon=True)
        self._update = update
        self._snapshot = snapshot
        self._version = version
        self._broadcast_interval = broadcast_interval
        self._inqueue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._stats: list[dict[str, float]] = []
        self._weights: tuple[int, dict[str, Any]] | None = None
        self._error: BaseException | None = None
        self.num_batches_dropped = 0
        self.busy_s = 0.0
        """Seconds spent in ``update`` (the learner's share of the wall clock)."""

    # ----------------------------------------------------------------- the driver's side
    def submit(self, item: Item) -> bool:
        """Queue a train batch; if the queue is full, drop the oldest waiting one first.

        Returns:
            Whether a batch was dropped to make room.
        """
        self.raise_if_failed()
        dropped = False
        while True:
            try:
                self._inqueue.put_nowait(item)
                return dropped
            except queue.Full:
                try:
                    self._inqueue.get_nowait()
                except queue.Empty:  # the learner took one meanwhile
                    continue
                self._inqueue.task_done()
                self.num_batches_dropped += 1
                dropped = True

    @property
    def queue_length(self) -> int:
        """Train batches waiting now."""
        return self._inqueue.qsize()

    def take_weights(self) -> tuple[int, dict[str, Any]] | None:
        """The newest weights snapshot not taken yet, as ``(version, state)``."""
        with self._lock:
            weights, self._weights = self._weights, None
        return weights

    def take_stats(self) -> list[dict[str, float]]:
        """The metrics of every update since the last call."""
        with self._lock:
            stats, self._stats = self._stats, []
        return stats

    def drain(self) -> None:
        """Wait until every queued batch is trained on (re-raising the learner's error)."""
        while self._inqueue.unfinished_tasks:
            self.raise_if_failed()
            time.sleep(0.001)
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        """Re-raise, in the driver, an exception the learner died of."""
        if self._error is not None:
            raise RuntimeError(f"the learner thread failed: {self._error!r}") from self._error

    def stop(self, timeout_s: float = 10.0) -> None:
        """Let the current update finish, then end the thread."""
        while True:
            try:
                self._inqueue.put_nowait(_STOP)
                break
            except queue.Full:
                try:
                    self._inqueue.get_nowait()
                    self._inqueue.task_done()
                except queue.Empty:
                    pass
        self.join(timeout_s)

    # ----------------------------------------------------------------- the learner's side
    def run(self) -> None:
        """Train on queued batches until stopped (or until an update raises)."""
        while True:
            item = self._inqueue.get()
            try:
                if item is _STOP:
                    return
                if self._error is not None:
                    continue  # failed: only drain the queue, the driver re-raises
                start = time.perf_counter()
                stats = self._update(item)
                weights = None
                if self._version() % self._broadcast_interval == 0:
                    weights = (self._version(), self._snapshot())
                self.busy_s += time.perf_counter() - start
                with self._lock:
                    self._stats.append(stats)
                    if weights is not None:
                        self._weights = weights
            except BaseException as error:  # re-raised in the driver by raise_if_failed
                logger.debug("learner update failed", exc_info=True)
                self._error = error
            finally:
                self._inqueue.task_done()
