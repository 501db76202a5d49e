"""The text messages of a session (``rlserve.session.v1``): their models and fast checks.

The fields and checks of an observation are the HTTP API's (:mod:`serving.http_edge`); a
session adds the message ``id`` and, for recurrent policies, the agent fields (``agent``,
``agents``, ``reset``). :func:`plain_action` takes the usual tick message past pydantic when it
is plainly valid; anything else is validated by the models, which word the errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from serving.decoding import count_boolean_tokens
from serving.http_edge import ApiError, ObservationRequest, ObservationsRequest
from serving.recurrent import AgentId

__all__ = [
    "Agent",
    "Reward",
    "Scalar",
    "SessionActionMessage",
    "SessionActionsMessage",
    "SessionResetMessage",
    "Tick",
    "check_agents",
    "plain_action",
]

Scalar = str | int | float | bool | None
"""A message ``id``: any JSON scalar, echoed in the answer."""
_MAX_SEED = 2**63 - 1
_MAX_AGENT_CHARS = 256
Agent = (
    Annotated[str, StringConstraints(max_length=_MAX_AGENT_CHARS)]
    | Annotated[int, Field(ge=-_MAX_SEED - 1, le=_MAX_SEED)]
)
"""An agent id: a string of up to 256 characters or a 64-bit integer (booleans are not ids)."""
_AGENT = "The agent whose observation this is (recurrent policies keep a state per agent)."
_FLOAT32_MAX = 3.4028234663852886e38
Reward = Annotated[float, Field(ge=-_FLOAT32_MAX, le=_FLOAT32_MAX, allow_inf_nan=False)]
"""A reward: any number a float32 holds."""
_REWARD = (
    "reward the agent's previous action brought, for a recurrent policy that reads it "
    "(absent: 0; ignored by other policies and at an episode's first step)."
)


class SessionActionMessage(ObservationRequest):
    """A text message asking for one observation's action."""

    id: Scalar = Field(default=None, description="Echoed in the answer.")
    agent: Agent | None = Field(default=None, description=_AGENT)
    reset: bool = Field(default=False, description="Start the agent's state afresh first.")
    reward: Reward | None = Field(default=None, description="The " + _REWARD)


class SessionActionsMessage(ObservationsRequest):
    """A text message asking for a batch's actions."""

    id: Scalar = Field(default=None, description="Echoed in the answer.")
    agents: list[Agent] | None = Field(
        default=None, description="Each row's agent (needed by recurrent policies)."
    )
    reset: bool = Field(default=False, description="Start these agents' states afresh first.")
    rewards: list[Reward] | None = Field(default=None, description="Each row's " + _REWARD)


class SessionResetMessage(BaseModel):
    """A text message forgetting every agent's state, or one agent's."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Scalar = Field(default=None, description="Echoed in the answer.")
    reset: Literal[True]
    agent: Agent | None = Field(default=None, description="Only this agent (absent: every one).")


_ACTION_FIELDS = frozenset(SessionActionMessage.model_fields)


class Tick(NamedTuple):
    """A plainly valid single-observation message: the fields of a :class:`SessionActionMessage`."""

    observation: Any
    explore: bool = False
    seed: int | None = None
    return_dist_inputs: bool = False
    agent: AgentId = None
    reset: bool = False
    reward: float | None = None


def plain_action(data: dict[str, Any], text: str) -> Tick | None:
    """The message's fields without pydantic's pass, when it is plainly valid; else None.

    The usual tick message (an observation, perhaps ``id``, ``explore``, ``seed``, ``agent``)
    is checked here in a few attribute tests instead of a validation pass (a tenth of a
    message's cost in the replica), and held in a tuple rather than a model (a pydantic
    ``model_construct`` alone costs ~4 us). Anything else, valid or not, goes through
    :func:`~serving.http_edge.validate_request`, which words the errors.
    """
    if "observation" not in data or not _ACTION_FIELDS.issuperset(data):
        return None
    flags = 0
    for key in ("explore", "return_dist_inputs"):
        if key in data:
            if not isinstance(data[key], bool):
                return None
            flags += 1
    seed = data.get("seed")
    if seed is not None and (type(seed) is not int or not 0 <= seed <= _MAX_SEED):
        return None
    if not _plain_agent(data):
        return None
    flags += "reset" in data
    flags += isinstance(data.get("id"), bool)
    if count_boolean_tokens(text) > flags:  # perhaps a boolean in the observation: check it
        return None
    get = data.get
    return Tick(
        data["observation"],
        get("explore", False),
        seed,
        get("return_dist_inputs", False),
        get("agent"),
        get("reset", False),
        get("reward"),
    )


def _plain_agent(data: dict[str, Any]) -> bool:
    """Whether ``agent`` and ``reset`` are absent or plainly valid."""
    if "reset" in data and not isinstance(data["reset"], bool):
        return False
    reward = data.get("reward")
    if reward is not None and not (
        type(reward) in (int, float) and -_FLOAT32_MAX <= reward <= _FLOAT32_MAX
    ):
        return False
    agent = data.get("agent")
    return (
        agent is None
        or (type(agent) is str and len(agent) <= _MAX_AGENT_CHARS)
        or (type(agent) is int and -_MAX_SEED - 1 <= agent <= _MAX_SEED)
    )


def check_agents(agents: Sequence[AgentId], rows: int) -> None:
    """A batch's agents: one per observation, each once (422 otherwise)."""
    if len(agents) != rows:
        raise ApiError(
            422, f"agents: expected {rows} agent ids, one per observation; got {len(agents)}"
        )
    if len(set(agents)) != len(agents):
        seen: set[AgentId] = set()
        for index, agent in enumerate(agents):
            if agent in seen:
                raise ApiError(422, f"agents[{index}]: agent {agent!r} appears twice in one batch")
            seen.add(agent)
