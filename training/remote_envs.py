"""Remote sub-environments: each env of a runner in its own Ray actor, stepped when it is ready.

SEED-style sampling (``.env_runners(remote_worker_envs=True)``) for slow environments — a
simulator that waits on I/O or on its own physics. The runner keeps every env's next step in
flight and, whenever some are ready (or ``remote_env_batch_wait_ms`` has passed since the
first), computes the actions of all the ready ones in one batched forward pass and sends each
its action. Envs never wait for each other, so N envs that each take ``d`` per step give up to
N steps per ``d``.

Each env actor applies gymnasium 1.x's next-step autoreset itself: the step after an episode's
end resets the env and returns the reset observation with reward 0, exactly as the vector envs
do, so the fragment has the same rows, masks and bootstrap semantics as with
``SyncVectorEnv``; each env simply fills its own column at its own pace.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from formats.leaves import obs_to_leaves
from training import columns as cols
from training.envs import make_env_creator
from training.fragments import Fragment

if TYPE_CHECKING:
    from training.env_runner import EnvRunner

__all__ = ["RemoteEnv", "RemoteEnvs"]

logger = logging.getLogger(__name__)


class RemoteEnv:
    """One sub-environment, as a Ray actor, with next-step autoreset.

    Args:
        env: The config's ``env`` setting.
        env_config: Its ``env_config``.
    """

    def __init__(self, env: Any, env_config: dict[str, Any]) -> None:
        self.env = make_env_creator(env, env_config)()
        self._done = False
        space = self.env.action_space
        # Actions arrive as plain Python values (cheaper to send than numpy scalars).
        self._dtype = None if isinstance(space, gym.spaces.Discrete) else space.dtype

    def spaces(self) -> tuple[Any, Any]:
        """The env's observation and action spaces."""
        return self.env.observation_space, self.env.action_space

    def reset(self, seed: int | None) -> Any:
        """Start an episode; returns its first observation."""
        obs, _ = self.env.reset(seed=seed)
        self._done = False
        return obs

    def step(self, action: Any) -> tuple[Any, float, bool, bool]:
        """One step; after an episode's end, a reset step (reward 0, the action ignored)."""
        if self._done:
            obs, _ = self.env.reset()
            self._done = False
            return obs, 0.0, False, False
        if self._dtype is not None:
            action = np.asarray(action, dtype=self._dtype)
        obs, reward, terminated, truncated, _ = self.env.step(action)
        self._done = bool(terminated or truncated)
        return obs, float(reward), bool(terminated), bool(truncated)

    def close(self) -> None:
        """Close the env."""
        self.env.close()


class RemoteEnvs:
    """The env actors of one runner and its sampling loop over them.

    Args:
        config: The algorithm config.
        runner_index: The owning runner's index (seeding).
        num_envs: How many env actors.
    """

    def __init__(self, config: Any, runner_index: int, num_envs: int) -> None:
        self.config = config
        self.runner_index = runner_index
        self.num_envs = num_envs
        if not ray.is_initialized():
            ray.init(include_dashboard=False, configure_logging=False)
        self._cls = ray.remote(num_cpus=config.num_cpus_per_env, max_restarts=0)(RemoteEnv)
        self.actors = [self._new_actor() for _ in range(num_envs)]
        self.num_restarts = 0
        self.single_observation_space, self.single_action_space = ray.get(
            self.actors[0].spaces.remote()
        )

    def _new_actor(self) -> Any:
        return self._cls.remote(self.config.env, self.config.env_config)

    def reset(self, seeds: list[int | None]) -> list[Any]:
        """Reset every env (seeded as a vector env's sub-envs would be)."""
        return list(ray.get([a.reset.remote(s) for a, s in zip(self.actors, seeds, strict=True)]))

    def _restart(self, index: int, error: BaseException, seed: int | None) -> Any:
        """Replace a failed env actor; returns the new episode's first observation."""
        if not self.config.restart_failed_sub_environments:
            raise error
        logger.warning(
            "runner %d: remote env %d failed (%r); re-creating it", self.runner_index, index, error
        )
        ray.kill(self.actors[index], no_restart=True)
        self.num_restarts += 1
        self.actors[index] = self._new_actor()
        return ray.get(self.actors[index].reset.remote(seed))

    def sample(self, runner: EnvRunner, steps: int, *, explore: bool) -> Fragment:
        """``steps`` steps of every env, each env stepped as soon as it is ready.

        Uses (and updates) the runner's current observations, autoreset flags, episode
        accounting and filter statistics, as its vector-env loop does.
        """
        rows = _Rows(steps, self.num_envs)
        wait_s = self.config.remote_env_batch_wait_ms / 1000.0
        current = list(runner.current_observations())
        in_flight: dict[Any, int] = {}
        ready = list(range(self.num_envs))
        while ready or in_flight:
            if ready:  # one batched forward pass for every ready env, then send each its step
                self._act(runner, ready, current, rows, explore)
                for j in ready:
                    action = runner.env_action(rows.actions[rows.count[j]][j]).tolist()
                    in_flight[self.actors[j].step.remote(action)] = j
                ready = []
            refs = list(in_flight)
            ray.wait(refs, num_returns=1)  # at least one, then whatever is ready by wait_s
            finished, _ = ray.wait(refs, num_returns=len(refs), timeout=wait_s)
            for ref in finished:
                j = in_flight.pop(ref)
                current[j] = self._take(runner, j, ref, rows)
                if rows.count[j] < steps:
                    ready.append(j)
        runner.set_current_observations(current)
        return rows.fragment(runner, current)

    def _take(self, runner: EnvRunner, j: int, ref: Any, rows: _Rows) -> Any:
        """Record env ``j``'s finished step in its next row; returns its new observation."""
        t = int(rows.count[j])
        try:
            obs, reward, term, trunc = ray.get(ref)
        except (RayActorError, RayTaskError) as error:
            # The partial episode is lost: cut it at the previous row and start afresh.
            if t > 0:
                rows.truncated[t - 1, j] |= not rows.terminated[t - 1, j]
                rows.valid[t - 1, j] = False
            obs = self._restart(j, error, runner.restart_seed(j))
            reward, term, trunc = 0.0, False, False
            runner.autoreset[j] = True  # this row is a reset row: invalid
        is_valid = not runner.autoreset[j]
        rows.rewards[t, j], rows.terminated[t, j], rows.truncated[t, j] = reward, term, trunc
        rows.valid[t, j] = is_valid
        finished = runner.account(j, reward, term, trunc, is_valid)
        if finished is not None:
            rows.returns.append(finished[0])
            rows.lengths.append(finished[1])
        runner.autoreset[j] = term or trunc
        rows.count[j] += 1
        return obs

    def _act(
        self,
        runner: EnvRunner,
        ready: list[int],
        current: list[Any],
        rows: _Rows,
        explore: bool,
    ) -> None:
        """One batched forward pass for the ready envs; records their rows' inputs and outputs."""
        space = runner.observation_space
        per_env = [obs_to_leaves(space, current[j]) for j in ready]
        batch = [np.stack(column) for column in zip(*per_env, strict=True)]
        out = runner.forward(batch, explore, valid=~runner.autoreset[ready])
        for row, j in enumerate(ready):
            t = int(rows.count[j])
            rows.obs[t][j] = per_env[row]
            rows.actions[t][j] = out[cols.ACTIONS][row]
            for key, value in out.items():
                if key not in (cols.ACTIONS, cols.ACTION_DIST_INPUTS):
                    rows.extra(key, value)[t, j] = value[row]

    def stop(self) -> None:
        """Kill the env actors."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []


def _batch(space: Any, observations: list[Any]) -> Any:
    """A list of single observations as one batched observation (what a vector env returns)."""
    if isinstance(space, gym.spaces.Dict):
        return {k: _batch(space[k], [o[k] for o in observations]) for k in space.spaces}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(_batch(s, [o[i] for o in observations]) for i, s in enumerate(space.spaces))
    return np.stack([np.asarray(o) for o in observations])


class _Rows:
    """A fragment being filled column by column, each env at its own pace."""

    def __init__(self, steps: int, envs: int) -> None:
        self.steps, self.envs = steps, envs
        self.count = np.zeros(envs, dtype=np.int64)  # rows each env has filled
        self.obs: list[list[Any]] = [[None] * envs for _ in range(steps)]
        self.actions: list[list[Any]] = [[None] * envs for _ in range(steps)]
        self.extras: dict[str, np.ndarray] = {}
        self.rewards = np.zeros((steps, envs), np.float32)
        self.terminated = np.zeros((steps, envs), bool)
        self.truncated = np.zeros((steps, envs), bool)
        self.valid = np.zeros((steps, envs), bool)
        self.returns: list[float] = []
        self.lengths: list[int] = []

    def extra(self, key: str, like: np.ndarray) -> np.ndarray:
        """The ``(T, N, ...)`` array of one module output, made on first use."""
        if key not in self.extras:
            self.extras[key] = np.zeros((self.steps, self.envs, *like.shape[1:]), like.dtype)
        return self.extras[key]

    def fragment(self, runner: EnvRunner, current: list[Any]) -> Fragment:
        """The filled rows as a time-major fragment."""
        space = runner.observation_space
        leaves = [
            np.stack([np.stack([row[j][i] for j in range(self.envs)]) for row in self.obs])
            for i in range(len(self.obs[0][0]))
        ]
        return Fragment(
            obs=leaves,
            next_obs=obs_to_leaves(space, _batch(space, current), batched=True),
            actions=np.stack([np.stack(row) for row in self.actions]),
            rewards=self.rewards,
            terminated=self.terminated,
            truncated=self.truncated,
            valid=self.valid,
            extras=self.extras,
            episode_returns=self.returns,
            episode_lengths=self.lengths,
            weights_version=runner.weights_version,
        )
