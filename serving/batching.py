"""Answering many validated requests with one graph call per policy.

:func:`compute_batch` is the batch step itself: the leaves of every request for a policy are
concatenated, the graph runs once (the runtime splits what exceeds the artifact's limit), and
the outputs are cut back per request, each sampled with its own ``explore`` and ``seed``. The
HTTP path runs it under Ray Serve's ``@serve.batch`` (``serving.app``), whose queue waits up to
``batch_wait_timeout_s`` for company.

:class:`Coalescer` runs it for session messages, without waiting: what was submitted during one
pass of the event loop is answered together on the next. A session's reader hands each message
to the loop and goes back to its socket, so at load the messages of every session whose data
arrived in the same ``select`` meet in one call; alone, a message waits one loop pass (a few
microseconds), never a timer. Batches are as large as the load makes them (capped at
``max_batch_size``), and the Python work per message (futures, queues, a batch-wait task) is a
fraction of ``@serve.batch``'s.

A recurrent policy's requests bring their state rows along: they are concatenated with the
observations (a request without a state gets the initial state's rows), and each answer gets
its own rows of the next state back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

import numpy as np

from serving.observations import ObservationError, observations_to_leaves
from serving.runtime import ActionBatch, PolicyRuntime, Previous, State

__all__ = ["Coalescer", "Infer", "Item", "Recorder", "compute_batch"]


class Item(NamedTuple):
    """One validated request."""

    runtime: PolicyRuntime
    leaves: list[np.ndarray]
    explore: bool
    seed: int | None
    state: State | None = None
    """A recurrent policy's state rows (``None``: the initial state)."""
    previous: Previous | None = None
    """The previous actions and rewards, for a policy that reads them (``None``: zeros)."""


class Infer(Protocol):
    """``await infer(runtime, leaves, explore, seed, state)``: how a request reaches the model."""

    def __call__(
        self,
        runtime: PolicyRuntime,
        leaves: list[np.ndarray],
        explore: bool,
        seed: int | None,
        state: State | None = None,
        previous: Previous | None = None,
    ) -> Awaitable[ActionBatch]:
        """The answer to one validated request."""
        ...


Pending = tuple[
    PolicyRuntime, list[np.ndarray] | None, bool, int | None, State | None, Previous | None
]
"""A request waiting for its pass: leaves ``None`` while its observation is still JSON."""
Recorder = Callable[[PolicyRuntime, float, int], None]
"""``record(runtime, start, requests)``: called after each graph call (``start``:
``time.perf_counter()`` before it) with the number of requests it answered."""


def compute_batch(items: list[Item], record: Recorder | None = None) -> list[ActionBatch]:
    """One graph call per policy for all ``items``, then per-request sampling, in order."""
    results: list[ActionBatch | None] = [None] * len(items)
    by_policy: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_policy.setdefault(id(item.runtime), []).append(index)
    for indices in by_policy.values():
        runtime = items[indices[0]].runtime
        group = [items[i] for i in indices]
        leaves = _concatenated([item.leaves for item in group])
        state = previous = None
        if runtime.is_recurrent:
            state = _concatenated(
                [
                    runtime.initial_state(item.leaves[0].shape[0])
                    if item.state is None
                    else item.state
                    for item in group
                ]
            )
        if runtime.previous_specs:
            previous = _concatenated(
                [
                    runtime.initial_previous(item.leaves[0].shape[0])
                    if item.previous is None
                    else item.previous
                    for item in group
                ]
            )
        start = time.perf_counter()
        dist_inputs, actions, next_state = runtime.run_graph(leaves, state, previous)
        if record is not None:
            record(runtime, start, len(indices))
        offset = 0
        for i, item in zip(indices, group, strict=True):
            rows = item.leaves[0].shape[0]
            part = slice(offset, offset + rows)
            offset += rows
            batch_actions = actions[part]
            if item.explore:
                batch_actions = runtime.sample(dist_inputs[part], batch_actions, item.seed)
            rows_state = None if next_state is None else [x[part] for x in next_state]
            results[i] = ActionBatch(batch_actions, dist_inputs[part], len(indices), rows_state)
    return [r for r in results if r is not None]


def _concatenated(requests: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Each array of the requests joined along the rows (one request: as it is)."""
    if len(requests) == 1:
        return requests[0]
    return [np.concatenate(column) for column in zip(*requests, strict=True)]


class Coalescer:
    """Answers what is submitted within one event-loop pass with :func:`compute_batch`.

    Args:
        max_batch_size: Most requests in one call; more wait for the next pass.
        record: Called after each graph call (metrics).
    """

    def __init__(self, max_batch_size: int = 64, record: Recorder | None = None) -> None:
        self.max_batch_size = max_batch_size
        self.record = record
        self._pending: list[tuple[Pending, Any, asyncio.Future[ActionBatch]]] = []
        self._scheduled = False

    async def __call__(
        self,
        runtime: PolicyRuntime,
        leaves: list[np.ndarray],
        explore: bool,
        seed: int | None,
        state: State | None = None,
        previous: Previous | None = None,
    ) -> ActionBatch:
        """The answer to one validated request, computed with what else arrives in this pass."""
        return await self._submit((runtime, leaves, explore, seed, state, previous))

    async def observation(
        self,
        runtime: PolicyRuntime,
        observation: Any,
        explore: bool,
        seed: int | None,
        state: State | None = None,
        previous: Previous | None = None,
    ) -> ActionBatch:
        """The answer to one observation in its JSON form, validated with the rest of its pass.

        The observations of one pass are checked and converted in one call (a fraction of
        the per-observation cost); when one of them is bad, each is checked alone, and only
        the bad ones fail.

        Raises:
            ObservationError: For this observation, worded as for a single ``observation``.
        """
        return await self._submit((runtime, None, explore, seed, state, previous), observation)

    async def _submit(self, item: Pending, observation: Any = None) -> ActionBatch:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ActionBatch] = loop.create_future()
        self._pending.append((item, observation, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        taken = self._pending[: self.max_batch_size]
        del self._pending[: self.max_batch_size]
        self._scheduled = bool(self._pending)
        if self._scheduled:  # the rest go on the next pass
            asyncio.get_running_loop().call_soon(self._flush)
        live = [entry for entry in taken if not entry[2].done()]  # not cancelled meanwhile
        items: list[Item] = []
        futures: list[asyncio.Future[ActionBatch]] = []
        for item, future in _validated(live):
            items.append(item)
            futures.append(future)
        if not items:
            return
        try:
            answers = compute_batch(items, self.record)
        except Exception as err:  # a runtime failure: every request of the batch gets it
            for future in futures:
                future.set_exception(err)
            return
        for future, answer in zip(futures, answers, strict=True):
            future.set_result(answer)


def _validated(
    entries: list[tuple[Pending, Any, asyncio.Future[ActionBatch]]],
) -> list[tuple[Item, asyncio.Future[ActionBatch]]]:
    """The entries with their leaves; a bad observation's future gets its error instead."""
    ready: list[tuple[Item, asyncio.Future[ActionBatch]]] = []
    raw: dict[int, list[tuple[Pending, Any, asyncio.Future[ActionBatch]]]] = {}
    for entry in entries:
        (runtime, leaves, explore, seed, state, previous), _, future = entry
        if leaves is not None:
            ready.append((Item(runtime, leaves, explore, seed, state, previous), future))
        else:
            raw.setdefault(id(runtime), []).append(entry)
    for group in raw.values():
        runtime = group[0][0][0]
        space = runtime.observation_space
        try:
            stacked = observations_to_leaves(space, [observation for _, observation, _ in group])
        except ObservationError:  # find the bad ones: each alone
            for (_, _, explore, seed, state, previous), observation, future in group:
                try:
                    leaves = observations_to_leaves(space, [observation])
                except ObservationError as err:
                    message = str(err).replace("observations[0]", "observation")
                    future.set_exception(ObservationError(message))
                    continue
                ready.append((Item(runtime, leaves, explore, seed, state, previous), future))
            continue
        for row, ((_, _, explore, seed, state, previous), _, future) in enumerate(group):
            leaves = [leaf[row : row + 1] for leaf in stacked]
            ready.append((Item(runtime, leaves, explore, seed, state, previous), future))
    return ready
