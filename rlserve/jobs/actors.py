"""``rlserve evaluate``'s actors: a policy from a checkpoint, an artifact or a served URL.

:func:`play_chunk` loads the policy once and plays one episode per seed through
:func:`serving.episodes.play_episode` (also run as a Ray task, one per chunk of seeds).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from formats.leaves import obs_to_leaves
from rlserve.jobs.sources import EnvSpec, EvaluationError, PolicySource
from serving.episodes import Episode, play_episode
from training.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

__all__ = ["pack_source", "play_chunk", "play_packed_chunk"]

MAX_PACKED_BYTES = 512 * 1024**2
"""The largest checkpoint or artifact shipped through Ray's object store to evaluation workers."""

logger = logging.getLogger(__name__)


class _Actor(Protocol):
    def start_episode(self) -> None: ...

    def act(self, obs: Any, *, explore: bool, seed: int) -> Any: ...

    def rewarded(self, reward: float) -> None: ...

    def close(self) -> None: ...


class _Previous:
    """The action taken and the reward received at the step before (for an LSTM reading them)."""

    action: Any = None
    reward: float | None = None

    def start_episode(self) -> None:
        self.action, self.reward = None, None

    def rewarded(self, reward: float) -> None:
        self.reward = reward


class _CheckpointActor(_Previous):
    def __init__(self, source: PolicySource) -> None:
        import torch

        from training.checkpoints import load_module
        from training.policy import Policy

        module, contents = load_module(source.location)
        steps = int(contents.metadata.get("counters", {}).get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0))
        self.policy = Policy(module, torch.device("cpu"), explore_default=False, timestep=steps)
        self.state: list[Any] | None = None
        """A recurrent policy's state along the episode being played."""

    def start_episode(self) -> None:
        super().start_episode()
        if self.policy.is_recurrent:
            self.state = self.policy.get_initial_state()

    def act(self, obs: Any, *, explore: bool, seed: int) -> Any:
        import torch

        recurrent: dict[str, Any] = {}
        if self.policy.is_recurrent:
            recurrent = {"state": self.state, "prev_action": self.action}
            recurrent["prev_reward"] = self.reward
        with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's RNG
            torch.manual_seed(seed)
            answer = self.policy.compute_single_action(obs, explore=explore, **recurrent)
        if not self.policy.is_recurrent:
            return answer
        self.action, self.state, _ = answer
        return self.action

    def close(self) -> None:
        pass


class _ArtifactActor(_Previous):
    def __init__(self, source: PolicySource) -> None:
        from exporters import load_artifact
        from serving.runtime import PolicyRuntime

        self.runtime = PolicyRuntime(load_artifact(source.location))
        self.discrete = isinstance(self.runtime.action_space, gym.spaces.Discrete)
        self.state: list[np.ndarray] | None = None
        """A recurrent policy's state along the episode (``None``: the initial state)."""

    def start_episode(self) -> None:
        super().start_episode()
        self.state = None

    def act(self, obs: Any, *, explore: bool, seed: int) -> Any:
        runtime = self.runtime
        leaves = [np.asarray(x)[None] for x in obs_to_leaves(runtime.observation_space, obs)]
        previous = None
        if runtime.previous_specs and self.action is not None:
            previous = runtime.initial_previous(1)
            for index, name in enumerate(runtime.previous_names):
                carried = self.action if name == "prev_actions" else self.reward
                previous[index][0] = 0.0 if carried is None else carried
        batch = runtime.compute(
            leaves, explore=explore, seed=seed, state=self.state, previous=previous
        )
        self.state, self.action = batch.state, batch.actions[0]
        return int(self.action) if self.discrete else self.action

    def close(self) -> None:
        pass


class _UrlActor:
    def __init__(self, source: PolicySource) -> None:
        from serving.client import CarriedState, PolicyClient

        self.url, self.name = source.location, str(source.policy)
        self.client = PolicyClient(source.location, token=source.token)
        self.carried = CarriedState()
        """What an episode carries from answer to request (a recurrent policy's state)."""

    def start_episode(self) -> None:
        self.carried.start_episode()

    def rewarded(self, reward: float) -> None:
        self.carried.rewarded(reward)

    def act(self, obs: Any, *, explore: bool, seed: int) -> Any:
        answer = self._call(
            lambda: self.client.compute_action(
                self.name, obs, explore=explore, seed=seed, **self.carried.request()
            )
        )
        return self.carried.answered(answer)

    def _call(self, call: Callable[[], Any]) -> Any:
        import httpx

        from serving.client import PolicyError

        try:
            return call()
        except (PolicyError, httpx.HTTPError) as err:
            raise EvaluationError(f"policy service {self.url}: {err}") from None

    def close(self) -> None:
        self.client.close()


class _SessionActor:
    """A served policy over one WebSocket session (``rlserve evaluate URL --session``).

    A recurrent policy's state stays on the server; each episode's first step resets it.
    """

    def __init__(self, source: PolicySource) -> None:
        from serving.session_client import PolicySession

        self.url = source.location
        self.session = PolicySession(source.location, str(source.policy), token=source.token)
        self.reward: float | None = None
        """The previous action's reward (``None``: the episode's first step, which resets)."""

    def start_episode(self) -> None:
        self.reward = None

    def rewarded(self, reward: float) -> None:
        self.reward = reward

    def act(self, obs: Any, *, explore: bool, seed: int) -> Any:
        from serving.answers import PolicyError

        reset, reward = self.reward is None, self.reward
        try:
            answer = self.session.compute_action(
                obs, reset=reset, reward=reward, explore=explore, seed=seed
            )
            return answer.action
        except PolicyError as err:
            raise EvaluationError(f"policy service {self.url} (session): {err}") from None

    def close(self) -> None:
        self.session.close()


def _make_actor(source: PolicySource) -> _Actor:
    if source.kind == "url" and source.session:
        return _SessionActor(source)
    factories: dict[str, Callable[[PolicySource], _Actor]] = {
        "checkpoint": _CheckpointActor,
        "artifact": _ArtifactActor,
        "url": _UrlActor,
    }
    return factories[source.kind](source)


def play_chunk(
    source: PolicySource, env: EnvSpec, seeds: list[int], explore: bool = False
) -> list[Episode]:
    """Load the policy, make the env, and play one episode per seed (also run as a Ray task).

    Exploratory actions are seeded per step (:func:`serving.episodes.action_seed`).
    """
    instance = env.make()
    actor: _Actor | None = None
    episodes = []
    try:
        actor = _make_actor(source)
        current = actor

        def act(obs: Any, action_seed: int | None) -> Any:
            return current.act(obs, explore=explore, seed=int(action_seed or 0))

        for seed in seeds:
            start = time.perf_counter()
            current.start_episode()
            episode = play_episode(instance, act, seed, on_reward=current.rewarded)
            episodes.append(episode)
            elapsed = time.perf_counter() - start
            logger.debug(
                "seed %d: return %g, %d steps, %.3f s",
                seed,
                episode.episode_return,
                episode.length,
                elapsed,
            )
    finally:
        instance.close()
        if actor is not None:
            actor.close()
    return episodes


def pack_source(source: PolicySource) -> dict[str, bytes]:
    """A checkpoint's or artifact's files, to ship to workers that may not share this disk.

    On a cluster joined with ``--address`` a worker on another node cannot read the driver's
    directory; the files travel through the object store instead, and the worker verifies
    every hash again as it loads them (``load_module`` / ``load_artifact``).

    Raises:
        EvaluationError: For a directory too large to ship (:data:`MAX_PACKED_BYTES`).
    """
    root = Path(source.location)
    files = {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
    size = sum(len(data) for data in files.values())
    if size > MAX_PACKED_BYTES:
        raise EvaluationError(
            f"{source.kind} {root} is {size / 1024**2:.0f} MiB; at most "
            f"{MAX_PACKED_BYTES // 1024**2} MiB are shipped to workers on a cluster"
        )
    return files


def play_packed_chunk(
    source: PolicySource,
    files: dict[str, bytes],
    env: EnvSpec,
    seeds: list[int],
    explore: bool = False,
) -> list[Episode]:
    """:func:`play_chunk` on a copy of the source's files (see :func:`pack_source`)."""
    with tempfile.TemporaryDirectory(prefix="rlserve-evaluate-") as tmp:
        root = Path(tmp) / Path(source.location).name
        for name, data in files.items():
            target = (root / name).resolve()
            if not target.is_relative_to(root.resolve()):  # names come from pack_source
                raise EvaluationError(f"refusing to unpack {name!r} outside {root}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        copy = dataclasses.replace(source, location=str(root))
        return play_chunk(copy, env, seeds, explore)
