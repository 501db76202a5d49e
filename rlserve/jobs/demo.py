"""``rlserve demo``: train PPO on CartPole until solved, export it, serve it, query it, evaluate it.

The evaluation over HTTP plays through :func:`serving.client.play_episodes`, that is through
:func:`serving.episodes.play_episode`, the loop ``rlserve evaluate`` uses too.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rich.console import Console

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)

OBSERVATION = [0.01, -0.02, 0.03, 0.04]


def run_demo(
    console: Console, *, episodes: int, port: int, workdir: str, keep_running: bool
) -> None:
    """Run the pipeline; with ``keep_running`` serve on until Ctrl-C or SIGTERM."""
    import gymnasium as gym

    from exporters import export_checkpoint, load_artifact
    from rlserve.jobs.service import (
        ServiceOptions,
        free_port,
        serve_until_interrupted,
        start_service,
        stop_service,
    )
    from rlserve.jobs.training import TrainOptions, run_training
    from serving import PolicyClient, play_episodes

    work = Path(workdir)
    start = time.perf_counter()
    checkpoint = run_training(
        TrainOptions(config_file="cartpole_ppo", checkpoint_dir=str(work), seed=0), console
    )
    trained_s = time.perf_counter() - start
    artifact_dir = export_checkpoint(checkpoint, work / "artifact", policy_name="cartpole")
    artifact = load_artifact(artifact_dir)
    console.print(f"exported version {artifact.version} to {artifact_dir}")
    obs = OBSERVATION
    try:
        url = start_service(
            ServiceOptions({"cartpole": str(artifact_dir)}, port=port or free_port())
        )
        console.print(f"serving at {url}")
        with PolicyClient(url) as client:
            single = client.compute_action("cartpole", obs, return_dist_inputs=True)
            console.print(f"compute_action({obs}) -> {single}")
            batch = client.compute_actions("cartpole", [obs, [0.0, 0.5, 0.0, -0.5]])
            console.print(f"compute_actions(2 observations) -> {batch.actions}")
            env = gym.make("CartPole-v1")
            try:
                played = play_episodes(client, "cartpole", env, episodes, seed=0)
            finally:
                env.close()
        mean = sum(e.episode_return for e in played) / max(1, len(played))
        console.print(
            f"\n[bold]summary[/]: trained in {trained_s:.1f} s -> {checkpoint}\n"
            f"  artifact {artifact_dir} (version {artifact.version})\n"
            f"  evaluation over HTTP: {len(played)} episodes, mean return {mean:.1f}"
        )
        if keep_running:
            console.print(
                f"  try: curl -s {url}/v1/policies/cartpole/compute_action "
                f"-H 'content-type: application/json' -d '{{\"observation\": {obs}}}'\n"
                f"  docs: {url}/docs   policies: {url}/v1/policies\n"
                "serving until Ctrl-C"
            )
            serve_until_interrupted()
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        stop_service()
    if not keep_running:
        console.print(
            "the demo's service has stopped; rerun with --keep-running to keep it up and try it"
        )
