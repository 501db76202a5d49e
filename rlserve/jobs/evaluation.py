"""``rlserve evaluate``: play seeded episodes with a policy and summarise the returns.

The policy comes from a checkpoint directory (training's hash-verified loader, torch), an
artifact directory (``exporters.load_artifact`` + onnxruntime, nothing unpickled) or the URL of a
running service (``serving.PolicyClient``). Episode ``i`` resets the env with ``seed + i`` and
exploratory actions are seeded per step (``episode_seed * 100_003 + step``, as
:func:`serving.play_episodes` does), so the per-episode results do not depend on how the
episodes are spread over workers. ``num_workers=0`` plays in this process without Ray; more
run contiguous chunks of the seeds as Ray tasks (one CPU each), each loading the policy itself.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table

from formats.errors import RlserveError
from formats.safeio import read_json, sha256_file, verify_directory, write_json
from formats.spaces import flatten_leaves, obs_to_leaves, space_from_json

__all__ = [
    "EnvSpec",
    "EpisodeRecord",
    "EvaluationError",
    "EvaluationOptions",
    "EvaluationReport",
    "PolicySource",
    "episode_seeds",
    "open_source",
    "play_chunk",
    "render_report",
    "run_evaluation",
    "split_seeds",
    "summarize",
    "write_report",
]

logger = logging.getLogger("rlserve.evaluate")
ACTION_SEED_STRIDE = 100_003
"""Exploratory action ``t`` of the episode seeded ``s`` uses seed ``s * 100_003 + t``."""
REPORT_FORMAT = "rlserve-evaluation"


class EvaluationError(RlserveError, ValueError):
    """The source, env or an option cannot be evaluated (the message says why)."""


@dataclass(frozen=True)
class EvaluationOptions:
    """Everything ``rlserve evaluate`` needs, already parsed."""

    source: str
    env: str | None = None
    episodes: int = 10
    num_workers: int = 1
    seed: int = 0
    explore: bool = False
    max_episode_steps: int | None = None
    policy: str | None = None
    token: str | None = field(default=None, repr=False)
    min_return: float | None = None
    output: str | None = None

    def validate(self) -> None:
        """Check option values before anything is loaded.

        Raises:
            EvaluationError: Naming the bad option.
        """
        if self.episodes < 1:
            raise EvaluationError(f"--episodes must be >= 1, got {self.episodes}")
        if self.num_workers < 0:
            raise EvaluationError(f"--num-workers must be >= 0, got {self.num_workers}")
        if not 0 <= self.seed <= 2**32 - self.episodes:
            raise EvaluationError(f"--seed must be in [0, 2**32 - episodes], got {self.seed}")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise EvaluationError(f"--max-episode-steps must be >= 1, got {self.max_episode_steps}")
        if self.min_return is not None and not math.isfinite(self.min_return):
            raise EvaluationError(f"--min-return must be a finite number, got {self.min_return}")
        if not _is_url(self.source) and (self.policy is not None or self.token is not None):
            raise EvaluationError("--policy and --token apply only to an http(s):// URL source")
        if self.output is not None:
            out = Path(self.output)
            if out.is_dir():
                raise EvaluationError(f"--output {out}: is a directory; give a file name")
            if not out.absolute().parent.is_dir():
                raise EvaluationError(f"--output {out}: directory {out.parent} does not exist")


@dataclass(frozen=True)
class PolicySource:
    """A verified policy source, small enough to send to every worker."""

    kind: str  # "checkpoint", "artifact" or "url"
    location: str
    algorithm: str
    version: str | None
    observation_space: dict[str, Any]
    action_space: dict[str, Any]
    env: str | None = None
    env_config: dict[str, Any] = field(default_factory=dict)
    policy: str | None = None
    token: str | None = field(default=None, repr=False)
    iteration: int | None = None

    def describe(self) -> str:
        """One line naming the source, e.g. ``artifact a/b (PPO, version 6d4f...)``."""
        name = f" policy {self.policy!r}" if self.policy else ""
        details = [self.algorithm]
        details += [f"version {self.version}"] if self.version else []
        details += [f"iteration {self.iteration}"] if self.iteration is not None else []
        return f"{self.kind} {self.location}{name} ({', '.join(details)})"


@dataclass(frozen=True)
class EpisodeRecord:
    """One played episode."""

    seed: int
    episode_return: float
    length: int
    terminated: bool
    truncated: bool


@dataclass(frozen=True)
class EvaluationReport:
    """The settings, per-episode results and summary of one evaluation."""

    options: EvaluationOptions
    source: PolicySource
    env: str
    env_from: str
    workers: int
    episodes: list[EpisodeRecord]
    summary: dict[str, float | int]

    @property
    def passed(self) -> bool | None:
        """Whether the mean return reaches ``--min-return`` (None without one)."""
        if self.options.min_return is None:
            return None
        return self.summary["return_mean"] >= self.options.min_return

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (the token is never included)."""
        opts = self.options
        return {
            "format": REPORT_FORMAT,
            "source": {
                "kind": self.source.kind,
                "location": self.source.location,
                "policy": self.source.policy,
                "algorithm": self.source.algorithm,
                "version": self.source.version,
                "iteration": self.source.iteration,
            },
            "env": self.env,
            "env_from": self.env_from,
            "settings": {
                "episodes": opts.episodes,
                "seed": opts.seed,
                "num_workers": opts.num_workers,
                "explore": opts.explore,
                "max_episode_steps": opts.max_episode_steps,
                "min_return": opts.min_return,
            },
            "workers_used": self.workers,
            "summary": dict(self.summary),
            "passed": self.passed,
            "episodes": [
                {
                    "seed": e.seed,
                    "return": e.episode_return,
                    "length": e.length,
                    "terminated": e.terminated,
                    "truncated": e.truncated,
                }
                for e in self.episodes
            ],
        }


def episode_seeds(seed: int, episodes: int) -> list[int]:
    """Episode ``i`` is reset with ``seed + i``."""
    return [seed + i for i in range(episodes)]


def split_seeds(seeds: list[int], workers: int) -> list[list[int]]:
    """Contiguous, near-equal chunks of ``seeds``: one per worker, none empty."""
    count = max(1, min(workers, len(seeds)))
    size, extra = divmod(len(seeds), count)
    chunks, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        chunks.append(seeds[start:end])
        start = end
    return chunks


def summarize(episodes: list[EpisodeRecord], wall_s: float) -> dict[str, float | int]:
    """Mean, (population) std, min and max of returns and lengths, and throughput."""
    returns = np.array([e.episode_return for e in episodes], dtype=np.float64)
    lengths = np.array([e.length for e in episodes], dtype=np.float64)
    wall = max(wall_s, 1e-9)
    return {
        "episodes": len(episodes),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "length_mean": float(lengths.mean()),
        "length_std": float(lengths.std()),
        "length_min": float(lengths.min()),
        "length_max": float(lengths.max()),
        "env_steps": int(lengths.sum()),
        "wall_s": wall_s,
        "episodes_per_s": len(episodes) / wall,
        "env_steps_per_s": float(lengths.sum()) / wall,
    }


# ---------------------------------------------------------------------- sources
def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def open_source(
    source: str, *, policy: str | None = None, token: str | None = None
) -> PolicySource:
    """Work out what ``source`` is and verify it (no policy is loaded yet).

    Raises:
        EvaluationError: For a missing path, a directory that is neither kind, or a service
            that cannot be reached or does not serve the policy.
        ValueError: ``CheckpointError`` / ``ArtifactError`` naming the bad file.
    """
    if _is_url(source):
        return _open_url(source, policy, token)
    if "://" in source:
        raise EvaluationError(f"{source}: only http:// and https:// URLs are supported")
    path = Path(source)
    if not path.exists():
        raise EvaluationError(f"{source}: no such file or directory")
    if (path / "manifest.json").is_file():
        return _open_artifact(path)
    if (path / "metadata.json").is_file():
        return _open_checkpoint(path)
    raise EvaluationError(
        f"{source}: neither a checkpoint (metadata.json) nor an artifact (manifest.json) directory"
    )


def _open_checkpoint(path: Path) -> PolicySource:
    from training.checkpoints import read_checkpoint

    contents = read_checkpoint(path)
    env = contents.config.get("env")
    return PolicySource(
        "checkpoint",
        str(path),
        str(contents.metadata.get("algorithm")),
        None,
        contents.metadata["observation_space"],
        contents.metadata["action_space"],
        env=env if isinstance(env, str) else None,
        env_config=dict(contents.config.get("env_config") or {}),
        iteration=int(contents.metadata.get("iteration", 0)),
    )


def _open_artifact(path: Path) -> PolicySource:
    from exporters import load_artifact

    manifest = load_artifact(path).manifest
    env, env_config = _source_checkpoint_env(
        Path(manifest.source_checkpoint), manifest.source_metadata_sha256
    )
    return PolicySource(
        "artifact",
        str(path),
        manifest.algorithm,
        manifest.version,
        manifest.observation_space,
        manifest.action_space,
        env=env,
        env_config=env_config,
    )


def _source_checkpoint_env(root: Path, metadata_sha256: str) -> tuple[str | None, dict[str, Any]]:
    """The env of the checkpoint an artifact was exported from, if it is still there, unchanged.

    The manifest does not record the env; its source checkpoint's config does.
    """
    try:
        if sha256_file(root / "metadata.json") != metadata_sha256:
            return None, {}
        verify_directory(root, kind="checkpoint")
        config = read_json(root / "algorithm_config.json", max_bytes=64 * 1024 * 1024)
    except (OSError, ValueError):
        return None, {}
    env = config.get("env") if isinstance(config, dict) else None
    if not isinstance(env, str):
        return None, {}
    return env, dict(config.get("env_config") or {})


def _open_url(url: str, policy: str | None, token: str | None) -> PolicySource:
    import httpx

    from serving.client import AuthenticationError, PolicyClient, PolicyError

    try:
        with PolicyClient(url, token=token, timeout=10.0) as client:
            names = [str(p["name"]) for p in client.policies()]
            if not names:
                raise EvaluationError(f"{url} serves no policies")
            name = policy or names[0]
            if name not in names:
                raise EvaluationError(f"{url} serves no policy {name!r}; it serves {names}")
            info = client.policy(name)
        return PolicySource(
            "url",
            url,
            str(info.get("algorithm")),
            info.get("version"),
            dict(info["observation_space"]),
            dict(info["action_space"]),
            policy=name,
            token=token,
        )
    except EvaluationError:
        raise
    except AuthenticationError as err:
        raise EvaluationError(f"{url}: {err.detail} (give the service's --token)") from None
    except (httpx.HTTPError, httpx.InvalidURL) as err:
        raise EvaluationError(f"cannot reach {url}: {err}") from None
    except (PolicyError, KeyError, TypeError, ValueError) as err:
        raise EvaluationError(f"{url} does not answer like an rlserve service: {err}") from None


# ---------------------------------------------------------------------- acting
class _Actor(Protocol):
    def act(self, obs: Any, *, explore: bool, seed: int) -> Any: ...

    def close(self) -> None: ...


class _CheckpointActor:
    def __init__(self, source: PolicySource) -> None:
        import torch

        from training.checkpoints import load_module
        from training.policy import Policy

        module, contents = load_module(source.location)
        steps = int(contents.metadata.get("counters", {}).get("num_env_steps_sampled_lifetime", 0))
        self.policy = Policy(module, torch.device("cpu"), explore_default=False, timestep=steps)

    def act(self, obs: Any, *, explore: bool, seed: int) -> Any:
        import torch

        if not explore:
            return self.policy.compute_single_action(obs, explore=False)
        with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's RNG
            torch.manual_seed(seed)
            return self.policy.compute_single_action(obs, explore=True)

    def close(self) -> None:
        pass


class _ArtifactActor:
    def __init__(self, source: PolicySource) -> None:
        from exporters import load_artifact
        from serving.runtime import PolicyRuntime

        self.runtime = PolicyRuntime(load_artifact(source.location))
        self.discrete = isinstance(self.runtime.action_space, gym.spaces.Discrete)

    def act(self, obs: Any, *, explore: bool, seed: int) -> Any:
        leaves = [np.asarray(x)[None] for x in obs_to_leaves(self.runtime.observation_space, obs)]
        action = self.runtime.compute(leaves, explore=explore, seed=seed).actions[0]
        return int(action) if self.discrete else action

    def close(self) -> None:
        pass


class _UrlActor:
    def __init__(self, source: PolicySource) -> None:
        from serving.client import PolicyClient

        self.url, self.name = source.location, str(source.policy)
        self.client = PolicyClient(source.location, token=source.token)

    def act(self, obs: Any, *, explore: bool, seed: int) -> Any:
        import httpx

        from serving.client import PolicyError

        try:
            return self.client.compute_action(self.name, obs, explore=explore, seed=seed)["action"]
        except (PolicyError, httpx.HTTPError) as err:
            raise EvaluationError(f"policy service {self.url}: {err}") from None

    def close(self) -> None:
        self.client.close()


def _make_actor(source: PolicySource) -> _Actor:
    factories: dict[str, Callable[[PolicySource], _Actor]] = {
        "checkpoint": _CheckpointActor,
        "artifact": _ArtifactActor,
        "url": _UrlActor,
    }
    return factories[source.kind](source)


@dataclass(frozen=True)
class EnvSpec:
    """The env to evaluate in: an id or ``"module:Class"``, its config, an optional step limit."""

    env: str
    env_config: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None

    def make(self) -> gym.Env[Any, Any]:
        """A fresh env (``max_episode_steps`` replaces a registered id's own time limit).

        Raises:
            UnknownEnvError: For an unknown id or an entry point that does not import.
        """
        from training.envs import make_env_creator

        config, limit = dict(self.env_config), self.max_episode_steps
        registered = self.env in gym.registry
        if limit is not None and registered:
            config["max_episode_steps"] = limit
        instance = make_env_creator(self.env, config)()
        if limit is not None and not registered:
            instance = gym.wrappers.TimeLimit(instance, limit)
        return instance


def play_chunk(
    source: PolicySource, env: EnvSpec, seeds: list[int], explore: bool = False
) -> list[EpisodeRecord]:
    """Load the policy, make the env, and play one episode per seed (also run as a Ray task).

    An episode ends when the env reports ``terminated`` or ``truncated`` (gymnasium 1.x).
    """
    instance = env.make()
    actor: _Actor | None = None
    episodes = []
    try:
        actor = _make_actor(source)
        for seed in seeds:
            start = time.perf_counter()
            obs, _ = instance.reset(seed=seed)
            total, length, terminated, truncated = 0.0, 0, False, False
            while not (terminated or truncated):
                action = actor.act(obs, explore=explore, seed=seed * ACTION_SEED_STRIDE + length)
                if isinstance(action, list):  # Box actions as JSON
                    action = np.asarray(action, dtype=instance.action_space.dtype)
                obs, reward, terminated, truncated, _ = instance.step(action)
                total += float(reward)
                length += 1
            episodes.append(EpisodeRecord(seed, total, length, bool(terminated), bool(truncated)))
            elapsed = time.perf_counter() - start
            logger.debug("seed %d: return %g, %d steps, %.3f s", seed, total, length, elapsed)
    finally:
        instance.close()
        if actor is not None:
            actor.close()
    return episodes


# ---------------------------------------------------------------------- the job
def _env_for(options: EvaluationOptions, source: PolicySource) -> tuple[EnvSpec, str]:
    limit = options.max_episode_steps
    if options.env is not None:
        config = source.env_config if options.env == source.env else {}
        return EnvSpec(options.env, dict(config), limit), "--env"
    if source.env is not None:
        return EnvSpec(source.env, dict(source.env_config), limit), f"the {source.kind}"
    why = {
        "artifact": "the artifact does not record it and its source checkpoint is gone or changed",
        "url": "a served policy does not record it",
    }.get(source.kind, "the checkpoint does not record it")
    raise EvaluationError(f"give --env: {why}")


def _check_spaces(env: EnvSpec, source: PolicySource) -> None:
    """Make the env once (failing early on unknown ids) and compare its spaces to the policy's."""
    obs_space = space_from_json(source.observation_space, "observation_space")
    act_space = space_from_json(source.action_space, "action_space")
    instance = env.make()
    try:
        env_obs, env_act = instance.observation_space, instance.action_space
    finally:
        instance.close()
    if [(p, s.shape) for p, s in flatten_leaves(env_obs)] != [
        (p, s.shape) for p, s in flatten_leaves(obs_space)
    ]:
        raise EvaluationError(
            f"env {env.env!r} observes {env_obs}, but the policy expects {obs_space}"
        )
    same = type(env_act) is type(act_space) and env_act.shape == act_space.shape
    if not same or getattr(env_act, "n", None) != getattr(act_space, "n", None):
        raise EvaluationError(
            f"env {env.env!r} takes {env_act}, but the policy acts in {act_space}"
        )


def run_evaluation(options: EvaluationOptions) -> EvaluationReport:
    """Check the options, open the source, play every episode and summarise them.

    Raises:
        ValueError: ``EvaluationError``, ``CheckpointError``, ``ArtifactError`` or
            ``UnknownEnvError``, each with a one-line message.
    """
    options.validate()
    source = open_source(options.source, policy=options.policy, token=options.token)
    env, env_from = _env_for(options, source)
    _check_spaces(env, source)
    seeds = episode_seeds(options.seed, options.episodes)
    if options.num_workers == 0:
        start = time.perf_counter()
        episodes = play_chunk(source, env, seeds, explore=options.explore)
        wall_s, workers = time.perf_counter() - start, 0
    else:
        chunks = split_seeds(seeds, options.num_workers)
        episodes, wall_s = _play_on_ray(source, env, chunks, options.explore)
        workers = len(chunks)
    summary = summarize(episodes, wall_s)
    return EvaluationReport(options, source, env.env, env_from, workers, episodes, summary)


def _play_on_ray(
    source: PolicySource, env: EnvSpec, chunks: list[list[int]], explore: bool
) -> tuple[list[EpisodeRecord], float]:
    """Play each chunk as a Ray task; start (and stop) a local Ray only if none is running."""
    from rlserve.local_ray import keep_ray_on_loopback

    keep_ray_on_loopback()  # effective only if ray is not imported yet (the CLI calls it first)
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
        logger.info("started a local Ray instance")
    refs: list[Any] = []
    done = False
    try:
        task: Any = ray.remote(num_cpus=1, max_retries=0)(play_chunk)
        start = time.perf_counter()
        refs = [task.remote(source, env, chunk, explore) for chunk in chunks]
        results: list[list[EpisodeRecord]] = ray.get(refs)
        wall_s, done = time.perf_counter() - start, True
    except ray.exceptions.RayTaskError as err:
        cause = err.cause
        if isinstance(cause, ValueError):
            raise EvaluationError(str(cause)) from None
        raise EvaluationError(
            f"an evaluation worker failed: {type(cause).__name__}: {cause}"
        ) from None
    except ray.exceptions.RayError as err:  # a worker process died, out of memory, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EvaluationError(f"an evaluation worker failed: {first}") from None
    finally:
        if started:
            ray.shutdown()
        elif not done:  # leave nothing running in a Ray instance that is not ours
            for ref in refs:
                ray.cancel(ref, force=True)
    return [e for chunk in results for e in chunk], wall_s


# ---------------------------------------------------------------------- output
def render_report(report: EvaluationReport, console: Console) -> None:
    """Print the summary table and the throughput line."""
    s, opts = report.summary, report.options
    mode = "exploring" if opts.explore else "deterministic"
    console.print(
        f"[bold]evaluated[/] {report.source.describe()} on {report.env} "
        f"(env from {report.env_from}): seeds {opts.seed}..{opts.seed + opts.episodes - 1}, "
        f"{mode}",
        highlight=False,
    )
    table = Table(show_edge=True)
    table.add_column("")
    for column in ("mean", "std", "min", "max"):
        table.add_column(column, justify="right")
    for row in ("return", "length"):
        table.add_row(row, *(f"{s[f'{row}_{c}']:.2f}" for c in ("mean", "std", "min", "max")))
    console.print(table)
    where = f"{report.workers} Ray worker(s)" if report.workers else "this process"
    console.print(
        f"{int(s['episodes'])} episodes in {s['wall_s']:.2f} s: "
        f"{s['episodes_per_s']:.2f} episodes/s, {s['env_steps_per_s']:.0f} env steps/s "
        f"in {where}",
        highlight=False,
    )


def write_report(report: EvaluationReport, path: str | os.PathLike[str]) -> Path:
    """Write the report's JSON atomically (a temporary sibling renamed into place)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        write_json(tmp, report.to_json())
        os.replace(tmp, target)
    except OSError as err:
        raise EvaluationError(f"--output {target}: cannot write: {err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target
