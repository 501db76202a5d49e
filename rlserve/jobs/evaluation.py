"""``rlserve evaluate``: play seeded episodes with a policy and summarise the returns.

The policy comes from a checkpoint directory (training's hash-verified loader, torch), an
artifact directory (``exporters.load_artifact`` + onnxruntime, nothing unpickled) or the URL of a
running service (``serving.PolicyClient``, or ``serving.PolicySession`` with ``--session``).
Episode ``i`` resets the env with ``seed + i`` and exploratory actions are seeded per step
(``episode_seed * 100_003 + step``, as :func:`serving.play_episodes` does), so the per-episode
results do not depend on how the episodes are spread over workers. ``num_workers=0`` plays in
this process without Ray; more run contiguous chunks of the seeds as Ray tasks (one CPU each),
each loading the policy itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from formats.errors import RlserveError
from formats.leaves import flatten_leaves
from formats.safeio import write_json
from formats.spaces import space_from_json
from rlserve.jobs.actors import pack_source, play_chunk, play_packed_chunk
from rlserve.jobs.local_ray import init_ray, keep_ray_on_loopback
from rlserve.jobs.sources import (
    EnvSpec,
    EvaluationError,
    EvaluationOptions,
    PolicySource,
    open_source,
)
from serving.episodes import Episode

__all__ = [
    "EnvSpec",
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

logger = logging.getLogger(__name__)
REPORT_FORMAT = "rlserve-evaluation"


@dataclass(frozen=True)
class EvaluationReport:
    """The settings, per-episode results and summary of one evaluation."""

    options: EvaluationOptions
    source: PolicySource
    env: str
    env_from: str
    workers: int
    episodes: list[Episode]
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
                "session": self.source.session,
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


def summarize(episodes: list[Episode], wall_s: float) -> dict[str, float | int]:
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
    if options.session:  # checked by validate(): a URL source
        source = dataclasses.replace(source, session=True)
    env, env_from = _env_for(options, source)
    _check_spaces(env, source)
    seeds = episode_seeds(options.seed, options.episodes)
    if options.num_workers == 0:
        start = time.perf_counter()
        episodes = play_chunk(source, env, seeds, explore=options.explore)
        wall_s, workers = time.perf_counter() - start, 0
    else:
        chunks = split_seeds(seeds, options.num_workers)
        episodes, wall_s = _play_on_ray(source, env, chunks, options.explore, options.address)
        workers = len(chunks)
    summary = summarize(episodes, wall_s)
    return EvaluationReport(options, source, env.env, env_from, workers, episodes, summary)


def _play_on_ray(
    source: PolicySource,
    env: EnvSpec,
    chunks: list[list[int]],
    explore: bool,
    address: str | None = None,
) -> tuple[list[Episode], float]:
    """Play each chunk as a Ray task: on the cluster at ``address``, else on a private Ray.

    A Ray this process initialised already is used as it is (and left running).
    """
    keep_ray_on_loopback()  # effective only if ray is not imported yet (the CLI calls it first)
    import ray

    started = init_ray(address, log_to_driver=False)
    if started:
        logger.info("started a local Ray instance" if address is None else f"joined {address}")
    refs: list[Any] = []
    done = False
    try:
        start = time.perf_counter()
        if address is not None and source.kind != "url":
            # The cluster's nodes may not share this disk: the files go with the tasks.
            files = ray.put(pack_source(source))
            packed: Any = ray.remote(num_cpus=1, max_retries=0)(play_packed_chunk)
            refs = [packed.remote(source, files, env, chunk, explore) for chunk in chunks]
        else:
            task: Any = ray.remote(num_cpus=1, max_retries=0)(play_chunk)
            refs = [task.remote(source, env, chunk, explore) for chunk in chunks]
        results: list[list[Episode]] = ray.get(refs)
        wall_s, done = time.perf_counter() - start, True
    except ray.exceptions.RayTaskError as err:
        cause = err.cause
        if isinstance(cause, (RlserveError, ValueError)):
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
            # Only the unfinished ones, and without force: Ray 2.60's force-kill cancel races
            # a reply already on its way ("Tried to complete task that was not pending"), a
            # failed check that aborts this whole process.
            _, unfinished = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in unfinished:
                ray.cancel(ref, force=False)
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
