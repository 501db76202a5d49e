"""``EnvRunner``: steps a gymnasium vector env with the current policy and returns fragments.

Runs in the driver (``num_env_runners=0``) or as a Ray actor. gymnasium 1.x semantics:

* The vector env autoresets on the **next** step (``AutoresetMode.NEXT_STEP``): after a step
  that ends an episode, the observation returned is the episode's final observation, and the
  following ``step`` ignores its action and returns the reset observation with reward 0. That
  following step is recorded with ``valid=False`` and never enters a loss.
* ``terminated`` (true end, no bootstrap) and ``truncated`` (time limit: bootstrap from
  ``V(final observation)``) are kept apart. Because of the next-step autoreset, the final
  observation is simply the next row of the fragment (or ``next_obs`` after the last row).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from formats.leaves import obs_to_leaves
from training import columns as cols
from training.envs import make_env_creator
from training.fragments import Fragment
from training.preprocessing import RunningStat
from training.remote_envs import RemoteEnvs
from training.rl_module import RLModule
from training.traces import TraceWriter

__all__ = ["EnvRunner", "Fragment", "derive_seed"]

logger = logging.getLogger(__name__)


def derive_seed(seed: int | None, runner_index: int, sub_env: int) -> int | None:
    """Distinct, reproducible seed for sub-env ``sub_env`` of runner ``runner_index``."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, runner_index, sub_env]).generate_state(1)[0])


class EnvRunner:
    """Samples fragments from ``num_envs_per_env_runner`` copies of the env.

    Args:
        config: The algorithm config (an ``AlgorithmConfig``).
        runner_index: 0 for the local runner, 1..n for remote ones (seeding, trace names).
    """

    def __init__(self, config: Any, runner_index: int = 0) -> None:
        self.config = config
        self.runner_index = runner_index
        logging.getLogger(__name__.partition(".")[0]).setLevel(
            config.log_level.replace("WARN", "WARNING")
        )
        self._creator = make_env_creator(config.env, config.env_config)
        self.num_envs = int(config.num_envs_per_env_runner)
        self._seed_offset = 0
        self._make_vector_env()
        self.observation_space, self.action_space = self._spaces()
        if runner_index > 0:  # an actor of its own: size torch's threads to its CPUs
            torch.set_num_threads(max(1, int(config.num_cpus_per_env_runner)))
        self.device = self._inference_device(config, runner_index)
        # The initial weights are replaced by the learner's: keep the global RNG untouched.
        with torch.random.fork_rng(devices=[]):
            self.module: RLModule = config.algo_class.build_module(
                config, self.observation_space, self.action_space
            )
        self.module.to(self.device).eval()
        seed = derive_seed(config.seed, runner_index, 10_000)
        self._generator = torch.Generator(device=self.device)
        if seed is not None:
            self._generator.manual_seed(seed)
        self._timestep = 0
        self.weights_version = 0
        self._filter_delta = RunningStat(self.module.preprocessor.flat_dim)
        self._traces = (
            TraceWriter(config.output, runner_index, config.output_max_file_size)
            if config.output
            else None
        )
        self._reset_all()

    @staticmethod
    def _inference_device(config: Any, runner_index: int) -> torch.device:
        """CUDA for a remote runner given GPUs (``num_gpus_per_env_runner``), else the CPU.

        Raises:
            RuntimeError: If the runner was given GPUs but torch sees no CUDA device.
        """
        if runner_index == 0 or config.num_gpus_per_env_runner <= 0:
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"env runner {runner_index}: num_gpus_per_env_runner="
                f"{config.num_gpus_per_env_runner:g} but torch sees no CUDA device here"
            )
        return torch.device("cuda")

    # ----------------------------------------------------------------- env management
    def _make_vector_env(self) -> None:
        self.remote_envs: RemoteEnvs | None = None
        self.env: Any = None  # a gymnasium vector env, unless the envs are remote
        # Only a runner that samples runs its envs in parallel: with remote runners, the
        # driver's local runner only knows the spaces (and keeps plain envs).
        samples = self.runner_index > 0 or self.config.num_env_runners == 0
        if self.config.remote_worker_envs and samples:
            self.remote_envs = RemoteEnvs(self.config, self.runner_index, self.num_envs)
            return
        # ASYNC: one subprocess per sub-env (gymnasium's AsyncVectorEnv), stepped in parallel.
        vector = (
            gym.vector.AsyncVectorEnv
            if self.config.gym_env_vectorize_mode == "ASYNC" and samples
            else gym.vector.SyncVectorEnv
        )
        self.env = vector(
            [self._creator for _ in range(self.num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
        )

    def _spaces(self) -> tuple[gym.Space[Any], gym.Space[Any]]:
        source: Any = self.remote_envs if self.remote_envs is not None else self.env
        return source.single_observation_space, source.single_action_space

    def reset(self) -> None:
        """Start fresh (seeded) episodes in every sub-env; unfinished episodes are dropped."""
        self._reset_all()

    def restart_seed(self, sub_env: int) -> int | None:
        """The seed sub-env ``sub_env`` starts (or restarts) its episodes from."""
        seed = derive_seed(self.config.seed, self.runner_index, sub_env)
        return None if seed is None else seed + self._seed_offset

    def _reset_all(self) -> None:
        seeds = [self.restart_seed(j) for j in range(self.num_envs)]
        if self.remote_envs is not None:
            self._obs = self.remote_envs.reset(seeds)  # one observation per env
        else:
            assert self.env is not None
            self._obs, _ = self.env.reset(seed=seeds if seeds[0] is not None else None)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        # A recurrent module's state per sub-env (every episode starts from the initial one).
        self._state = {
            key: value.cpu().numpy()
            for key, value in self.module.initial_state(self.num_envs).items()
        }
        # The previous action and reward the LSTM reads (lstm_use_prev_*): zeros at the start.
        self._previous = {
            key: value.cpu().numpy()
            for key, value in self.module.initial_previous(self.num_envs).items()
        }
        self._ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_len = np.zeros(self.num_envs, dtype=np.int64)
        if self._traces is not None:
            self._traces.start(self.num_envs)

    def _restart_env(self, error: Exception) -> None:
        logger.warning("runner %d: env failed (%r); re-creating it", self.runner_index, error)
        try:
            self._close_envs()
        except Exception:
            logger.debug("closing the failed env raised", exc_info=True)
        self._seed_offset += 1
        self._make_vector_env()
        self._reset_all()

    # ----------------------------------------------------------------- sampling
    def _leaves(self, obs: Any) -> list[np.ndarray]:
        return obs_to_leaves(self.observation_space, obs, batched=True)

    # The remote-env loop (training.remote_envs) steps each env on its own; these are the
    # pieces of a step it shares with the vector-env loop below.
    @property
    def autoreset(self) -> np.ndarray:
        """Per sub-env: its next step is the reset step after an episode's end."""
        return self._autoreset

    def current_observations(self) -> Any:
        """The observations the next actions are computed for."""
        return self._obs

    def set_current_observations(self, obs: Any) -> None:
        """Replace them (after a sampling loop that stepped the envs itself)."""
        self._obs = obs

    def forward(
        self,
        leaves: list[np.ndarray],
        explore: bool,
        valid: np.ndarray,
        state: dict[str, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        """Actions (and extras) for a batch; ``valid`` rows feed the filter's statistics.

        A recurrent module is fed ``state`` and returns its new state among the outputs.
        """
        tensors = [torch.from_numpy(np.asarray(x)).to(self.device) for x in leaves]
        recurrent: dict[str, Any] = {}
        if state is not None:
            recurrent["state"] = {k: torch.from_numpy(v).to(self.device) for k, v in state.items()}
        with torch.no_grad():
            if explore:
                out = self.module.forward_exploration(
                    tensors, self._generator, self._timestep, **recurrent
                )
            else:
                out = self.module.forward_inference(tensors, **recurrent)
            if self.module.obs_filter.enabled:
                flat = self.module.preprocessor(tensors).flat.cpu().numpy()
                self._filter_delta.push(flat[valid])
        return {key: value.cpu().numpy() for key, value in out.items()}

    def account(
        self, sub_env: int, reward: float, terminated: bool, truncated: bool, valid: bool
    ) -> tuple[float, int] | None:
        """Count one step of one sub-env; returns ``(return, length)`` if it ended an episode."""
        if not valid:
            return None
        self._ep_return[sub_env] += reward
        self._ep_len[sub_env] += 1
        self._timestep += 1
        if not (terminated or truncated):
            return None
        finished = (float(self._ep_return[sub_env]), int(self._ep_len[sub_env]))
        self._ep_return[sub_env], self._ep_len[sub_env] = 0.0, 0
        return finished

    def env_action(self, action: np.ndarray) -> np.ndarray:
        """One sub-env's action as the env takes it (Box: clipped, in its dtype)."""
        return self._env_actions(action)

    def _env_actions(self, actions: np.ndarray) -> np.ndarray:
        if isinstance(self.action_space, gym.spaces.Box):
            if self.config.clip_actions:
                actions = np.clip(actions, self.action_space.low, self.action_space.high)
            return actions.astype(self.action_space.dtype, copy=False)
        return actions

    def _step(
        self,
        action: np.ndarray,
        t: int,
        terminated: np.ndarray,
        truncated: np.ndarray,
        valid: np.ndarray,
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """Step the vector env; with ``restart_failed_sub_environments``, survive env errors."""
        assert self.env is not None
        try:
            next_obs, reward, term, trunc, _ = self.env.step(self._env_actions(action))
        except Exception as error:
            if not self.config.restart_failed_sub_environments:
                raise
            # The partial episodes are lost: cut the previous row and start afresh.
            if t > 0:
                truncated[t - 1] |= ~(terminated[t - 1] | truncated[t - 1])
                valid[t - 1] = False
            self._restart_env(error)
            zeros = np.zeros(self.num_envs, dtype=bool)
            self._autoreset[:] = True  # this row is a reset row: invalid
            return self._obs, np.zeros(self.num_envs, np.float32), zeros, zeros.copy()
        return next_obs, reward, term, trunc

    def sample(self, num_steps: int | None = None, *, explore: bool = True) -> Fragment:
        """Step every sub-env ``num_steps`` times (default: the config's fragment length).

        Args:
            num_steps: Steps per sub-env.
            explore: Sample actions (True) or take deterministic ones.

        Returns:
            The fragment, time-major.
        """
        steps = num_steps or self.config.get_rollout_fragment_length()
        if self.remote_envs is not None:
            fragment = self.remote_envs.sample(self, steps, explore=explore)
            if self._traces is not None:  # the rows are complete only now
                for t in range(steps):
                    self._traces.record(
                        [leaf[t] for leaf in fragment.obs],
                        fragment.actions[t],
                        fragment.rewards[t],
                        fragment.terminated[t],
                        fragment.truncated[t],
                        fragment.valid[t],
                    )
            return fragment
        n = self.num_envs
        obs_rows: list[list[np.ndarray]] = []
        actions, rewards = [], np.zeros((steps, n), np.float32)
        terminated, truncated = np.zeros((steps, n), bool), np.zeros((steps, n), bool)
        valid = np.zeros((steps, n), bool)
        extras: dict[str, list[np.ndarray]] = {}
        returns: list[float] = []
        lengths: list[int] = []
        recurrent = self.module.is_recurrent
        for t in range(steps):
            leaves = self._leaves(self._obs)
            state_in = self._state if recurrent else None
            fed = {**state_in, **self._previous} if state_in is not None else None
            out = self.forward(leaves, explore, ~self._autoreset, fed)
            if fed is not None:  # the state (and previous inputs) of each row, for training
                for key, value in fed.items():
                    extras.setdefault(key, []).append(value)
                new_h, new_c = out.pop(cols.STATE_OUT_H), out.pop(cols.STATE_OUT_C)
            action = out[cols.ACTIONS]
            next_obs, reward, term, trunc = self._step(action, t, terminated, truncated, valid)
            is_valid = ~self._autoreset
            obs_rows.append(leaves)
            actions.append(action)
            for key, value in out.items():
                if key not in (cols.ACTIONS, cols.ACTION_DIST_INPUTS):
                    extras.setdefault(key, []).append(value)
            rewards[t], terminated[t], truncated[t], valid[t] = reward, term, trunc, is_valid
            self._ep_return += np.where(is_valid, reward, 0.0)
            self._ep_len += is_valid
            if self._traces is not None:
                self._traces.record(leaves, action, reward, term, trunc, is_valid)
            done = (term | trunc) & is_valid
            for j in np.flatnonzero(done):
                returns.append(float(self._ep_return[j]))
                lengths.append(int(self._ep_len[j]))
                self._ep_return[j], self._ep_len[j] = 0.0, 0
            if state_in is not None:
                # After a reset row the env holds a new episode: it starts from the initial
                # state (the learner's sequences reset at the same rows).
                new_h[~is_valid], new_c[~is_valid] = 0.0, 0.0
                self._state = {cols.STATE_IN_H: new_h, cols.STATE_IN_C: new_c}
                if self._previous:
                    self._previous = self.module.next_previous(action, reward, is_valid)
            self._autoreset = term | trunc
            self._obs = next_obs
            self._timestep += int(is_valid.sum())
        return Fragment(
            obs=[np.stack([row[i] for row in obs_rows]) for i in range(len(obs_rows[0]))],
            next_obs=self._leaves(self._obs),
            actions=np.stack(actions),
            rewards=rewards,
            terminated=terminated,
            truncated=truncated,
            valid=valid,
            extras={k: np.stack(v) for k, v in extras.items()},
            episode_returns=returns,
            episode_lengths=lengths,
            weights_version=self.weights_version,
        )

    def sample_with_filter_delta(
        self,
        weights: dict[str, Any] | None = None,
        global_timestep: int | None = None,
        weights_version: int | None = None,
    ) -> tuple[Fragment, dict[str, Any] | None]:
        """Load new weights if given, then one fragment and the filter statistics meanwhile.

        What an asynchronous driver asks for: one call per fragment, so new weights come with
        the request and the statistics (``None`` when unfiltered) with the samples, instead
        of separate round trips to every runner.
        """
        if weights is not None:
            self.set_weights(weights, global_timestep, weights_version)
        fragment = self.sample()
        delta = self.get_filter_delta() if self.module.obs_filter.enabled else None
        return fragment, delta

    # ----------------------------------------------------------------- weights and filter
    def get_weights(self) -> dict[str, np.ndarray]:
        """The module's state (parameters and buffers, filter statistics included)."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.module.state_dict().items()}

    def set_weights(
        self,
        weights: dict[str, Any],
        global_timestep: int | None = None,
        weights_version: int | None = None,
    ) -> None:
        """Load module state broadcast by the driver (and the global step for schedules).

        Args:
            weights: Module state as arrays.
            global_timestep: The driver's lifetime env steps (exploration schedules).
            weights_version: The learner's update count these weights come from; fragments
                sampled from now on carry it.
        """
        # Copied in place into the module's tensors: ``load_state_dict`` checks every
        # submodule and cost ~2 ms a call, which an off-policy loop that syncs after every
        # env step (SAC) pays each step. Any mismatch takes the checked path and its error.
        state = self.module.state_dict()
        if (
            self.device.type == "cpu"
            and state.keys() == weights.keys()
            and all(tuple(state[k].shape) == np.shape(v) for k, v in weights.items())
        ):
            for key, value in weights.items():
                np.copyto(state[key].numpy(), value, casting="same_kind")
        else:
            checked = {k: torch.tensor(np.asarray(v)) for k, v in weights.items()}
            self.module.load_state_dict(checked)
        if global_timestep is not None:
            self._timestep = global_timestep
        if weights_version is not None:
            self.weights_version = weights_version

    def get_filter_delta(self) -> dict[str, Any]:
        """Observation statistics gathered since the last call (then cleared)."""
        delta = self._filter_delta.to_json()
        self._filter_delta = RunningStat(self.module.preprocessor.flat_dim)
        return delta

    def get_spaces(self) -> tuple[gym.Space[Any], gym.Space[Any]]:
        """The single-env observation and action spaces."""
        return self.observation_space, self.action_space

    def apply(self, fn: Any, *args: Any) -> Any:
        """Call ``fn(self, *args)`` here (what ``foreach_worker`` sends to each runner)."""
        return fn(self, *args)

    def ping(self) -> float:
        """Health check used by the runner group."""
        return time.time()

    def _close_envs(self) -> None:
        if self.remote_envs is not None:
            self.remote_envs.stop()
        elif self.env is not None:
            self.env.close()

    def stop(self) -> None:
        """Close the envs (or kill the env actors) and flush traces."""
        if self._traces is not None:
            self._traces.close()
        self._close_envs()
