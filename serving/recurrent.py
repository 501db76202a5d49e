"""A recurrent policy's state in the service: carried by the client, or held per agent.

The graph of a recurrent (LSTM) policy takes a state with each observation and returns the next
one (the manifest's ``state``). The service keeps the HTTP API stateless and holds state only
where a connection gives it a lifetime:

- **Unary HTTP**: the client carries it. An answer's ``"state"`` is the next request's
  ``"state"``: a list with one array per part of the state in the manifest's order (e.g.
  ``[h, c]``), each one row of ``cell`` numbers for ``compute_action`` and one row per
  observation for ``compute_actions``. Absent (or ``null``) is the initial state: a new
  episode. :func:`state_from_json` checks it at the edge, :func:`state_to_json` writes it.
- **Sessions**: the server holds it, per agent id within the session (:class:`AgentStates`),
  from the initial state until the client resets it or the session closes.

A session's messages are answered concurrently (their answers are batched with other sessions'),
but the steps of one agent must follow each other: step ``t + 1`` needs the state step ``t``
returned. :meth:`AgentStates.turn` keeps that order without a lock per message: each message
takes its place in its agents' lines as it is read (synchronously, so in arrival order), and
waits only for the earlier messages of the same agents. Different agents never wait for each
other, so a game server that sends 100 NPCs' observations at once gets one batched call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from exporters.manifest import PREVIOUS_ACTIONS as PREV_ACTIONS
from exporters.manifest import PREVIOUS_REWARDS as PREV_REWARDS
from serving.http_edge import ApiError
from serving.runtime import PolicyRuntime, Previous, State

__all__ = ["AgentId", "AgentStates", "previous_from_json", "state_from_json", "state_to_json"]

AgentId = str | int | None
"""An agent within a session (``None``: the session's own agent, when the client names none)."""


def state_from_json(runtime: PolicyRuntime, value: Any, rows: int | None) -> State | None:
    """The state a request carries, checked against the policy's ``state`` specs.

    Args:
        runtime: The policy asked.
        value: The request's ``"state"`` (``None``: the initial state).
        rows: The request's observation count (``None``: a single observation, whose state
            parts have no batch axis).

    Returns:
        One array per state part with the batch axis first, or ``None`` for the initial state.

    Raises:
        ApiError: 422 naming the part and what was expected.
    """
    if value is None:
        return None
    specs = runtime.state_specs
    if not specs:
        raise ApiError(
            422, f"state: policy {runtime.name!r} is feed-forward and takes no state; leave it out"
        )
    names = ", ".join(spec.input for spec in specs)
    if not isinstance(value, list) or len(value) != len(specs):
        raise ApiError(
            422,
            f"state: expected a list of {len(specs)} arrays ({names}), as the last answer's "
            "'state', or null for an episode's first step",
        )
    state = []
    for index, (spec, part) in enumerate(zip(specs, value, strict=True)):
        where = f"state[{index}] ({spec.input})"
        row_shape = [int(side) for side in spec.shape[1:]]
        expected = row_shape if rows is None else [rows, *row_shape]
        try:
            array = np.asarray(part, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise ApiError(422, f"{where}: expected numbers in shape {expected}") from None
        if list(array.shape) != expected:
            raise ApiError(
                422, f"{where}: expected shape {expected}, got {list(array.shape)}"
            ) from None
        with np.errstate(over="ignore"):  # too large for float32: infinity, refused below
            converted = array.astype(np.dtype(spec.dtype))
        if not np.isfinite(converted).all():
            raise ApiError(422, f"{where}: expected finite numbers (no NaN, no infinity)")
        state.append(converted if rows is not None else converted[None])
    return state


def previous_from_json(
    runtime: PolicyRuntime, actions: Any, rewards: Any, rows: int | None, fields: tuple[str, str]
) -> Previous | None:
    """The previous action and reward a request carries, checked against the policy.

    A policy that does not read them ignores them (as RLlib's ``compute_single_action``
    did): they are facts about the episode, which a client may send to any policy.

    Args:
        runtime: The policy asked.
        actions: The previous action (``rows is None``) or one per row; ``None``: zeros.
        rewards: The previous reward, or one per row; ``None``: zeros.
        rows: The request's observation count (``None``: a single observation).
        fields: The request's names for the two (named in errors).

    Returns:
        One array per the manifest's ``previous``, or ``None`` (neither sent, or neither read).

    Raises:
        ApiError: 422 naming the field and what was expected.
    """
    if not runtime.previous_specs or (actions is None and rewards is None):
        return None
    given = {PREV_ACTIONS: actions, PREV_REWARDS: rewards}
    previous = runtime.initial_previous(1 if rows is None else rows)
    for index, spec in enumerate(runtime.previous_specs):
        value = given[spec.name]
        if value is None:
            continue
        field = fields[0] if spec.name == PREV_ACTIONS else fields[1]
        row_shape = [int(side) for side in spec.shape[1:]]
        expected = row_shape if rows is None else [rows, *row_shape]
        array = _numbers(value, field, expected, integers=np.dtype(spec.dtype).kind == "i")
        if spec.name == PREV_ACTIONS and array.dtype.kind == "i":
            space = runtime.action_space
            low, high = int(space.start), int(space.start) + int(space.n)  # type: ignore[attr-defined]
            if array.size and (array.min() < low or array.max() >= high):
                raise ApiError(422, f"{field}: expected actions in [{low}, {high})")
        previous[index] = (array if rows is not None else array[None]).astype(spec.dtype)
    return previous


def _numbers(value: Any, field: str, expected: list[int], integers: bool) -> np.ndarray:
    """``value`` as an array of ``expected`` shape: finite numbers (integers if asked)."""
    kind = "integers" if integers else "numbers"
    try:
        array = np.asarray(value, dtype=np.int64 if integers else np.float64)
        if integers and not np.array_equal(array, np.asarray(value, dtype=np.float64)):
            raise ValueError
    except (ValueError, TypeError, OverflowError):
        raise ApiError(422, f"{field}: expected {kind} in shape {expected}") from None
    if list(array.shape) != expected:
        raise ApiError(422, f"{field}: expected shape {expected}, got {list(array.shape)}")
    with np.errstate(over="ignore"):
        if not integers and not np.isfinite(array.astype(np.float32)).all():
            raise ApiError(422, f"{field}: expected finite numbers (no NaN, no infinity)")
    return array


def state_to_json(state: State, single: bool) -> list[Any]:
    """A state as an answer's ``"state"`` (``single``: one observation's, without batch axis)."""
    return [part[0].tolist() if single else part.tolist() for part in state]


class AgentStates:
    """The state of every agent of one session, and the order of their steps.

    The states are dropped with the object when the session closes. A state kept under one
    version of the policy is not carried over to the next (a hot reload): the agent starts
    again from the initial state, since another network's memory means nothing to this one.

    Args:
        max_agents: Agents whose state one session may hold; a message that would add one
            more is refused (413) until the client resets some.
    """

    def __init__(self, max_agents: int) -> None:
        self.max_agents = max_agents
        self._states: dict[AgentId, tuple[str, State, int, np.ndarray | None]] = {}
        """Each agent's policy version, state row, steps taken since its episode began, and
        the action it was answered last (for a policy that reads the previous action)."""
        self._last: dict[AgentId, asyncio.Future[None]] = {}
        """Each agent's latest step in line (waited for by its next one)."""
        self._everyone: asyncio.Future[None] | None = None
        """A reset of every agent in line: steps of agents not in ``_last`` wait for it."""

    def __len__(self) -> int:
        return len(self._states)

    def turn(self, agents: Sequence[AgentId] | None) -> _Turn:
        """``async with``: wait for the earlier steps of ``agents`` (``None``: every agent's).

        The place in line is taken by this call, before any wait: call it in the order the
        messages arrived, with nothing awaited between reading a message and here.
        """
        return _Turn(self, agents)

    def rows(self, runtime: PolicyRuntime, agents: Sequence[AgentId], reset: bool) -> State | None:
        """The state rows of ``agents`` in order (``None``: all initial).

        New agents, agents on ``reset`` and agents whose state was kept under another version
        of the policy start from the initial state.

        Raises:
            ApiError: 413 when the new agents would pass ``max_agents``.
        """
        states = self._states
        new = sum(agent not in states for agent in agents)
        if new and len(states) + new > self.max_agents:
            raise ApiError(
                413,
                f"agent: this session holds the state of {len(states)} agents, at most "
                f"{self.max_agents}; reset agents that are done ({{'reset': true, 'agent': id}}) "
                "or open another session",
            )
        if reset:
            return None
        if len(agents) == 1:  # a tick: the kept rows as they are
            kept = states.get(agents[0])
            return kept[1] if kept is not None and kept[0] == runtime.version else None
        rows = [self._kept(runtime, agent) for agent in agents]
        if all(row is None for row in rows):
            return None
        initial = runtime.initial_state(1)
        return [
            np.concatenate([initial[k] if row is None else row[k] for row in rows])
            for k in range(len(initial))
        ]

    def _kept(self, runtime: PolicyRuntime, agent: AgentId) -> State | None:
        kept = self._states.get(agent)
        return kept[1] if kept is not None and kept[0] == runtime.version else None

    def previous_rows(
        self,
        runtime: PolicyRuntime,
        agents: Sequence[AgentId],
        reset: bool,
        rewards: Sequence[float] | None,
    ) -> Previous | None:
        """The previous action and reward of each agent's step, for a policy that reads them.

        The previous action is the one this session answered the agent last; the reward is
        what the message says that action brought (``rewards``; absent: 0). Zeros where an
        agent's episode starts (new, reset, or kept under another version).
        """
        if not runtime.previous_specs:
            return None
        previous = runtime.initial_previous(len(agents))
        if reset:
            return previous
        for row, agent in enumerate(agents):
            kept = self._states.get(agent)
            if kept is None or kept[0] != runtime.version:
                continue
            for index, name in enumerate(runtime.previous_names):
                if name == PREV_ACTIONS and kept[3] is not None:
                    previous[index][row] = kept[3]
                elif name == PREV_REWARDS and rewards is not None:
                    previous[index][row] = rewards[row]
        return previous

    def keep(
        self,
        runtime: PolicyRuntime,
        agents: Sequence[AgentId],
        state: State,
        reset: bool,
        actions: np.ndarray | None = None,
    ) -> list[int]:
        """Hold each agent's row of ``state`` (where its next step starts) and its action.

        The rows are copied: a view would keep the whole batch's output alive for as long as
        the agent waits.

        Returns:
            Each agent's steps since its episode began, this one included (1 after a reset):
            answered as ``steps``, so a client can see its agents' memory is continuous.
        """
        steps = []
        version = runtime.version
        keep_actions = actions is not None and PREV_ACTIONS in runtime.previous_names
        for row, agent in enumerate(agents):
            kept = None if reset else self._states.get(agent)
            taken = kept[2] + 1 if kept is not None and kept[0] == version else 1
            rows = [part[row : row + 1].copy() for part in state]
            action = actions[row].copy() if keep_actions and actions is not None else None
            self._states[agent] = (version, rows, taken, action)
            steps.append(taken)
        return steps

    def reset(self, agent: AgentId | None, everyone: bool) -> None:
        """Forget one agent's state, or every agent's (``everyone``)."""
        if everyone:
            self._states.clear()
        else:
            self._states.pop(agent, None)


class _Turn:
    """One message's place in its agents' lines (see :meth:`AgentStates.turn`)."""

    __slots__ = ("agents", "earlier", "mine", "owner")

    def __init__(self, owner: AgentStates, agents: Sequence[AgentId] | None) -> None:
        self.owner, self.agents = owner, agents
        self.mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if agents is None:
            everyone = owner._everyone
            self.earlier = [*owner._last.values(), *([everyone] if everyone else [])]
            owner._last.clear()
            owner._everyone = self.mine
        else:
            self.earlier = []
            for agent in agents:
                before = owner._last.get(agent, owner._everyone)
                if before is not None and before is not self.mine:
                    self.earlier.append(before)
                owner._last[agent] = self.mine

    async def __aenter__(self) -> None:
        pending = [future for future in self.earlier if not future.done()]
        if not pending:
            return
        try:
            # asyncio.wait, not await: a cancelled waiter must not cancel the steps before it.
            await asyncio.wait(pending)
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._leave()

    def _leave(self) -> None:
        if not self.mine.done():
            self.mine.set_result(None)
        owner = self.owner
        if self.agents is None:
            if owner._everyone is self.mine:
                owner._everyone = None
            return
        for agent in self.agents:
            if owner._last.get(agent) is self.mine:
                del owner._last[agent]
