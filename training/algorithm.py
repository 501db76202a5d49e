"""``Algorithm``: a ``ray.tune.Trainable`` that samples with EnvRunners and updates a module.

Subclasses (PPO, DQN, SAC, IMPALA) provide ``get_default_config``, ``build_module``,
``setup_learner``, ``training_step`` and their learner state for checkpoints. The rest —
runners, filter merging, weight broadcast, metrics, evaluation, checkpoints and action
computation — is shared here.
"""

from __future__ import annotations

import abc
import logging
import os
import random
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch
from ray.train._internal.session import _TrainingResult
from ray.tune import Checkpoint, Trainable

from training import metrics as m
from training.algorithms import algorithm_class
from training.checkpoints import read_checkpoint, verify_checkpoint, write_checkpoint
from training.config import AlgorithmConfig
from training.distributed import Shard
from training.env_runner import EnvRunner, Fragment
from training.env_runner_group import EnvRunnerGroup
from training.learner_group import LearnerGroup
from training.policy import Policy
from training.preprocessing import RunningStat
from training.rl_module import RLModule
from training.run_directory import resolve_checkpoint

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

__all__ = ["Algorithm"]

logger = logging.getLogger(__name__)
SMOOTHING_EPISODES = 100
T = TypeVar("T")


class Algorithm(Trainable, abc.ABC):
    """Base of PPO, DQN, SAC and IMPALA. Build one with ``PPOConfig().environment(...).build()``.

    Args:
        config: An ``AlgorithmConfig`` (or its ``to_dict()`` form, as Ray Tune passes it).
        **kwargs: Passed to ``ray.tune.Trainable`` (Tune's storage context).
    """

    config_class: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    name: ClassVar[str] = "Algorithm"
    supports_lstm: ClassVar[bool] = False
    """Whether ``training(model={"use_lstm": True})`` works (its module has the LSTM path)."""
    supports_multi_agent: ClassVar[bool] = False
    """Whether ``multi_agent(policies=...)`` works (the algorithm trains a policy map)."""
    multi_agent_class: ClassVar[type[Algorithm] | None] = None
    """The class that trains this algorithm's policy map (built for multi-agent configs)."""
    learner_class: ClassVar[Any] = None
    """The learner, built as ``learner_class(module, config.hyperparameters, device, shard)``;
    ``None``: the algorithm has no learner of that shape (no ``learners(num_learners=N)``)."""
    config: AlgorithmConfig  # type: ignore[assignment]
    learner_group: LearnerGroup | None
    learner: Any  # the driver's learner (absent while a LearnerGroup learns)

    def __init__(
        self, config: AlgorithmConfig | dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if isinstance(config, AlgorithmConfig):
            config = config.to_dict()
        super().__init__(config=dict(config or {}), **kwargs)

    # ----------------------------------------------------------------- subclass hooks
    @classmethod
    def get_default_config(cls) -> AlgorithmConfig:
        """A fresh default config for this algorithm."""
        return cls.config_class()

    @classmethod
    @abc.abstractmethod
    def build_module(
        cls,
        config: AlgorithmConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
    ) -> RLModule:
        """Create this algorithm's module for the given spaces."""
        raise NotImplementedError

    @classmethod
    def build_learner(
        cls, config: AlgorithmConfig, module: RLModule, device: torch.device, shard: Shard
    ) -> Any:
        """This algorithm's learner around ``module`` (for the driver, or one of N learners).

        The learner all-reduces its gradients with the other learners of ``shard`` (see
        :mod:`training.distributed`).
        """
        if cls.learner_class is None:
            raise NotImplementedError(f"{cls.name} has no data-parallel learners")
        return cls.learner_class(module, config.hyperparameters, device, shard)

    @abc.abstractmethod
    def setup_learner(self) -> None:
        """Create the learner (``self.learner``) around ``self.module``.

        With ``num_learners > 0`` the :class:`LearnerGroup` (``self.learner_group``) is started
        already, and the update goes through :meth:`learner_update` instead.
        """
        raise NotImplementedError

    @abc.abstractmethod
    def training_step(self) -> dict[str, float]:
        """Sample, update, and return the learner metrics."""
        raise NotImplementedError

    def iteration_results(self) -> dict[str, Any]:
        """Extra top-level entries of this iteration's result (none by default)."""
        return {}

    @abc.abstractmethod
    def learner_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The learner's tensors and JSON state for checkpoints."""
        raise NotImplementedError

    @abc.abstractmethod
    def set_learner_state(self, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
        """Restore what :meth:`learner_state` returned."""
        raise NotImplementedError

    @classmethod
    def default_resource_request(cls, config: dict[str, Any] | AlgorithmConfig) -> Any:
        """Resources Ray Tune reserves per trial: the driver, every learner and EnvRunner actor."""
        from ray.tune import PlacementGroupFactory

        cfg = (
            config
            if isinstance(config, AlgorithmConfig)
            else cls.config_class.from_dict(
                {k: v for k, v in config.items() if not k.startswith("__")}
            )
        )
        bundles = [{"CPU": cfg.num_cpus_for_main_process, "GPU": cfg.num_gpus}]
        bundles += [
            {"CPU": cfg.num_cpus_per_learner, "GPU": cfg.num_gpus_per_learner}
        ] * cfg.num_learners
        bundles += [
            {"CPU": cfg.num_cpus_per_env_runner, "GPU": cfg.num_gpus_per_env_runner}
        ] * cfg.num_env_runners
        return PlacementGroupFactory(bundles, strategy="PACK")

    # ----------------------------------------------------------------- Trainable API
    def _setup_common(self, config: dict[str, Any]) -> None:
        """The config (validated), logging, seeds, the learner's device and threads."""
        self.config = self.config_class.from_dict(config)
        self.config.validate()
        level = self.config.log_level.replace("WARN", "WARNING")
        logging.getLogger(__name__.partition(".")[0]).setLevel(level)
        if self.config.seed is not None:
            torch.manual_seed(self.config.seed)
            np.random.seed(self.config.seed % 2**32)
            random.seed(self.config.seed)
        local_gpu = self.config.num_gpus > 0 or (
            self.config.num_learners == 0 and self.config.num_gpus_per_learner > 0
        )
        self.device = torch.device("cuda" if local_gpu else "cpu")
        # Small RL networks run fastest single-threaded; give the learner what Tune reserves.
        torch.set_num_threads(max(1, int(self.config.num_cpus_for_main_process)))

    def __new__(cls, config: Any = None, *args: Any, **kwargs: Any) -> Any:
        """An instance of :attr:`multi_agent_class` when the config sets ``multi_agent()``.

        So ``PPO(config=...)`` (and Tune's ``"PPO"`` trainable) trains a policy map whenever
        the config asks for one.
        """
        target = cls
        if cls.multi_agent_class is not None and _wants_multi_agent(config):
            target = cls.multi_agent_class
        return super().__new__(target)

    def setup(self, config: dict[str, Any]) -> None:
        """Validate the config, start runners, build the module and the learner."""
        target = self.multi_agent_class
        if target is not None and not isinstance(self, target) and _wants_multi_agent(config):
            # Built without __new__'s say (Ray's actor wrapper, say): become the policy map.
            self.__class__ = target
            self.setup(config)
            return
        self._setup_common(config)
        self.env_runner = EnvRunner(self.config, 0)
        self.observation_space, self.action_space = self.env_runner.get_spaces()
        self.module = self.build_module(self.config, self.observation_space, self.action_space)
        self.module.to(self.device)
        self.learner_group = None
        if self.config.num_learners > 0:
            self.learner_group = LearnerGroup(
                self.name,
                self.config,
                self.observation_space,
                self.action_space,
                self._module_state(),
            )
        self.setup_learner()
        self.env_runner_group = EnvRunnerGroup(self.config, self.env_runner)
        self.filter_stat = RunningStat(self.module.preprocessor.flat_dim)
        self.counters: dict[str, int] = {
            m.NUM_ENV_STEPS_SAMPLED_LIFETIME: 0,
            m.NUM_EPISODES_LIFETIME: 0,
            m.NUM_ENV_STEPS_TRAINED_LIFETIME: 0,
        }
        self._returns: deque[float] = deque(maxlen=SMOOTHING_EPISODES)
        self._lengths: deque[int] = deque(maxlen=SMOOTHING_EPISODES)
        self._evaluation_runner: EnvRunner | None = None
        self.sync_weights()

    def step(self) -> dict[str, Any]:
        """One training iteration: ``training_step`` plus metrics and optional evaluation."""
        start = time.perf_counter()
        sampled_before = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        episodes_before = self.counters[m.NUM_EPISODES_LIFETIME]
        learner_metrics = self.training_step()
        elapsed = time.perf_counter() - start
        sampled = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] - sampled_before
        returns = list(self._returns)
        result: dict[str, Any] = {
            m.ENV_RUNNER_RESULTS: {
                **m.episode_summary(returns, list(self._lengths)),
                m.NUM_EPISODES: self.counters[m.NUM_EPISODES_LIFETIME] - episodes_before,
                m.NUM_ENV_STEPS_SAMPLED: sampled,
            },
            m.LEARNER_RESULTS: {m.DEFAULT_POLICY_ID: learner_metrics},
            m.NUM_HEALTHY_ENV_RUNNERS: self.env_runner_group.num_healthy_remote_env_runners,
            m.NUM_REMOTE_ENV_RUNNERS: self.env_runner_group.num_remote_env_runners,
            m.NUM_ENV_RUNNER_RESTARTS: self.env_runner_group.num_restarts,
            m.NUM_ENV_STEPS_SAMPLED_THROUGHPUT: sampled / elapsed if elapsed > 0 else 0.0,
            **self.counters,
            **self.iteration_results(),
        }
        interval = self.config.evaluation_interval
        if interval is not None and (self.iteration + 1) % interval == 0:
            result[m.EVALUATION_RESULTS] = self.evaluate()
        return result

    def get_auto_filled_metrics(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Tune's auto-filled metrics, with ``config`` as a plain dict (Tune's Result.config)."""
        metrics: dict[str, Any] = super().get_auto_filled_metrics(*args, **kwargs)
        if isinstance(metrics.get("config"), AlgorithmConfig):
            metrics["config"] = metrics["config"].to_dict()
        return metrics

    def train(self) -> dict[str, Any]:
        """Run one iteration and return its RLlib-shaped nested result."""
        result: dict[str, Any] = super().train()  # type: ignore[no-untyped-call]
        return result

    # ----------------------------------------------------------------- shared machinery
    def sample_fragments(self, min_steps: int) -> list[Fragment]:
        """Sample from the runners until at least ``min_steps`` rows (env steps taken).

        Rows include the autoreset steps that follow an episode's end (which never enter a
        loss), so one round of ``"auto"``-length fragments is exactly one train batch.
        """
        fragments: list[Fragment] = []
        rows = 0
        while rows < min_steps:
            new = self.env_runner_group.sample()
            fragments += new
            rows += sum(f.rewards.size for f in new)
        self.record_fragments(fragments)
        return fragments

    def learner_update(self, method: str, *args: Any) -> Any:
        """``learner.<method>(*args)``: in the driver, or on every learner of the group.

        With a :class:`LearnerGroup`, every learner runs the method on the same inputs (each
        training on its slice), and the driver's module takes learner 0's new weights (the
        runners and checkpoints read it). The driver's observation-filter statistics go to
        the learners first: they change between updates, in the driver only.
        """
        if self.learner_group is None:
            return getattr(self.learner, method)(*args)
        filter_state = None
        if self.module.obs_filter.enabled:
            filter_state = {
                k: v for k, v in self._module_state().items() if k.startswith("obs_filter.")
            }
        result, weights = self.learner_group.update(method, filter_state, *args)
        self.module.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
        return result

    def foreach_learner(self, fn: Callable[[Any], T]) -> list[T]:
        """``fn(learner)`` on the driver's learner, or on each of the group's (rank order)."""
        if self.learner_group is None:
            return [fn(self.learner)]
        return self.learner_group.foreach_learner(fn)

    def _module_state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}

    def _push_weights_to_learners(self) -> None:
        if self.learner_group is not None:
            self.learner_group.set_weights(self._module_state())

    def record_fragments(self, fragments: list[Fragment]) -> None:
        """Count sampled fragments: env steps, finished episodes, returns for the results."""
        for fragment in fragments:
            self._returns.extend(fragment.episode_returns)
            self._lengths.extend(fragment.episode_lengths)
            self.counters[m.NUM_EPISODES_LIFETIME] += len(fragment.episode_returns)
            self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] += fragment.num_env_steps

    def sync_weights(self, weights_version: int | None = None) -> None:
        """Merge the runners' filter statistics, then broadcast module state to every runner.

        Args:
            weights_version: Tag the fragments sampled from now on (asynchronous algorithms
                measure their policy lag with it); ``None`` leaves the runners' tag.
        """
        if self.module.obs_filter.enabled:
            for delta in self.env_runner_group.get_filter_deltas():
                self.filter_stat.merge(RunningStat.from_json(delta))
            self.module.obs_filter.set_stats(self.filter_stat)
        weights = self._module_state()
        self.env_runner_group.sync_weights(
            weights, self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME], weights_version
        )

    def evaluate(self) -> dict[str, Any]:
        """Play ``evaluation_duration`` episodes with the current (frozen-filter) policy.

        Each evaluation starts from the same seeded initial states (when a seed is set), so
        successive evaluations compare policies, not luck.
        """
        if self._evaluation_runner is None:
            eval_config = self.config.copy()
            eval_config.update_from_dict(
                {
                    "num_envs_per_env_runner": 1,
                    "output": None,
                    "remote_worker_envs": False,  # one env, stepped in the driver
                    "gym_env_vectorize_mode": "SYNC",
                }
            )
            self._evaluation_runner = EnvRunner(eval_config, runner_index=1_000_000)
        runner = self._evaluation_runner
        runner.set_weights({k: v.cpu() for k, v in self.module.state_dict().items()})
        runner.reset()
        returns: list[float] = []
        lengths: list[int] = []
        while len(returns) < self.config.evaluation_duration:
            fragment = runner.sample(256, explore=self.config.evaluation_explore)
            returns += fragment.episode_returns
            lengths += fragment.episode_lengths
        runner.get_filter_delta()  # evaluation never feeds the filter
        returns = returns[: self.config.evaluation_duration]
        lengths = lengths[: self.config.evaluation_duration]
        return {
            m.ENV_RUNNER_RESULTS: {
                **m.episode_summary(returns, lengths),
                m.NUM_EPISODES: len(returns),
            }
        }

    # ----------------------------------------------------------------- weights and policy
    def get_policy(self, policy_id: str | None = m.DEFAULT_POLICY_ID) -> Policy:
        """The policy: module access, preprocessing, distributions, values/Q-values.

        Raises:
            ValueError: For another id than ``"default_policy"`` (one policy is trained here).
        """
        if policy_id not in (None, m.DEFAULT_POLICY_ID):
            raise ValueError(
                f"policy_id {policy_id!r}: a single-agent algorithm has one policy, "
                f"{m.DEFAULT_POLICY_ID!r}"
            )
        return Policy(
            self.module,
            self.device,
            explore_default=self.config.explore,
            timestep=self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME],
        )

    def get_weights(self) -> dict[str, np.ndarray]:
        """Module state (parameters and buffers) as numpy arrays."""
        return self.get_policy().get_weights()

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Load module state and broadcast it to every runner."""
        self.get_policy().set_weights(weights)
        self._push_weights_to_learners()
        self.sync_weights()

    def compute_single_action(
        self,
        observation: Any,
        state: list[Any] | None = None,
        prev_action: Any = None,
        prev_reward: float | None = None,
        explore: bool | None = None,
        policy_id: str | None = None,
    ) -> Any:
        """Action for one observation, with the training-time preprocessing and filter.

        A recurrent policy takes and returns its state: ``(action, state_out, {})``; an LSTM
        that reads the previous action and reward takes them too. ``policy_id``: which policy
        of a multi-agent algorithm (a single-agent one has only ``"default_policy"``).
        """
        return self.get_policy(policy_id or m.DEFAULT_POLICY_ID).compute_single_action(
            observation, state, prev_action, prev_reward, explore=explore
        )

    def compute_actions(
        self,
        observations: Any,
        state_batches: list[Any] | None = None,
        prev_action_batch: Any = None,
        prev_reward_batch: Any = None,
        explore: bool | None = None,
        policy_id: str | None = None,
    ) -> Any:
        """Actions for a batch of observations (a list, or a batched array/dict).

        A recurrent policy takes and returns its states: ``(actions, state_outs, {})``.
        """
        return self.get_policy(policy_id or m.DEFAULT_POLICY_ID).compute_actions(
            observations, state_batches, prev_action_batch, prev_reward_batch, explore=explore
        )

    # ----------------------------------------------------------------- checkpoints
    def save(self, checkpoint_dir: str | None = None) -> Any:
        """Write a checkpoint; ``.checkpoint.path`` of the result is its directory.

        Outside Tune only :func:`~training.checkpoints.write_checkpoint` writes it (a hidden
        sibling renamed into place), so the directory appears complete or not at all, even
        under SIGKILL; ``Trainable.save`` created it first, and a kill left it empty. Under
        Tune, Tune's storage context persists the checkpoint as for any class trainable.

        Args:
            checkpoint_dir: The directory to write (replaced atomically if it exists); a new
                temporary directory if ``None``.
        """
        if self._storage is not None:
            return super().save(checkpoint_dir)
        if checkpoint_dir is None:
            # A fresh, private, empty directory, which the atomic write then replaces.
            checkpoint_dir = tempfile.mkdtemp(prefix=f"{self.name.lower()}_checkpoint_")
        self.save_checkpoint(checkpoint_dir)
        # What Trainable.save returns for a local (storage-less) trainable.
        metrics: dict[str, Any] = dict(self._last_result) if self._last_result else {}
        checkpoint = Checkpoint.from_directory(checkpoint_dir)
        return _TrainingResult(checkpoint=checkpoint, metrics=metrics)

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """Write the checkpoint files atomically into ``checkpoint_dir``."""
        tensors, data = self.learner_state()
        write_checkpoint(
            checkpoint_dir,
            algorithm=self.name,
            config=self.config.to_json_dict(),
            module=self.module,
            learner_tensors=tensors,
            learner_json=data,
            filter_state=self.filter_stat.to_json() if self.module.obs_filter.enabled else None,
            observation_space=self.observation_space,
            action_space=self.action_space,
            iteration=self.iteration,
            counters=dict(self.counters),
            time_total_s=self._time_total,
        )

    def load_checkpoint(self, checkpoint: str | dict[str, Any] | None) -> None:
        """Verify and load a checkpoint directory into this running algorithm."""
        if not isinstance(checkpoint, str | os.PathLike):
            raise TypeError(f"expected a checkpoint directory, got {type(checkpoint).__name__}")
        contents = read_checkpoint(checkpoint)
        if contents.metadata["algorithm"] != self.name:
            raise ValueError(
                f"checkpoint {checkpoint} is a {contents.metadata['algorithm']} checkpoint; "
                f"this algorithm is {self.name}"
            )
        self.module.load_state_dict(contents.module_state)
        self._push_weights_to_learners()
        self.set_learner_state(contents.learner_tensors, contents.learner_json)
        if contents.filter_state is not None:
            self.filter_stat = RunningStat.from_json(contents.filter_state)
        for key in self.counters:
            self.counters[key] = int(contents.metadata["counters"].get(key, 0))
        self._iteration = int(contents.metadata["iteration"])
        self._time_total = float(contents.metadata.get("time_total_s", 0.0))
        self._timesteps_total = self.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]  # type: ignore[assignment]
        self.env_runner_group.get_filter_deltas()  # statistics gathered before the load are stale
        self.sync_weights()

    def restore(self, checkpoint_path: Any) -> None:
        """Verify and load a checkpoint into this running algorithm.

        Unlike ``ray.tune.Trainable.restore`` this never unpickles anything and changes nothing
        (not even the iteration counter) unless every file of the checkpoint verifies.

        Args:
            checkpoint_path: A checkpoint directory, a ``ray.tune.Checkpoint``, the result of
                :meth:`save`, or a run directory (its newest checkpoint that verifies, see
                :func:`~training.run_directory.latest_checkpoint`).
        """
        target = getattr(checkpoint_path, "checkpoint", None) or checkpoint_path
        self.load_checkpoint(str(_resolve(str(getattr(target, "path", target)))))
        self._restored = True
        self._time_since_restore = 0.0
        self._iterations_since_restore = 0
        self._timesteps_since_restore = 0

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str] | Any,
        policy_ids: list[str] | None = None,
        **overrides: Any,
    ) -> Algorithm:
        """Rebuild the algorithm a checkpoint was written by, with optional config overrides.

        Args:
            path: Checkpoint directory (or a ``ray.tune.Checkpoint``), or a run directory:
                its newest checkpoint that verifies, with a logged warning for each newer
                one skipped (empty, partial, tampered).
            policy_ids: Of a multi-agent checkpoint, restore only these policies (pass a
                ``policy_mapping_fn`` that maps every agent to one of them).
            **overrides: Settings to change, e.g. ``num_env_runners=0`` for an actor-free
                restore, or ``policy_mapping_fn`` (a multi-agent checkpoint records its
                mapping only by name: a lambda must be passed again).

        Raises:
            CheckpointError: If the checkpoint (or every checkpoint of the run) fails to verify.
            ConfigError: A multi-agent checkpoint whose mapping must be passed again.
        """
        path = str(_resolve(str(getattr(path, "path", path))))
        if verify_checkpoint(path).get("multi_agent"):
            from training.multi_agent.checkpoints import (
                multi_agent_config,
                read_multi_agent_checkpoint,
            )

            ma = read_multi_agent_checkpoint(path, policy_ids)
            algo_cls = algorithm_class(str(ma.metadata["algorithm"]))
            settings = multi_agent_config(ma.config, ma, policy_ids, overrides)
        else:
            if policy_ids is not None:
                raise ValueError(f"policy_ids: checkpoint {path} holds one (default) policy")
            contents = read_checkpoint(path)
            algo_cls = algorithm_class(str(contents.metadata["algorithm"]))
            settings = contents.config
        config = algo_cls.get_default_config().update_from_dict(settings)
        config.update_from_dict(overrides)
        algo: Algorithm = config.build()
        algo.load_checkpoint(path)
        return algo

    def stop(self) -> None:
        """Stop the algorithm: runner actors are killed, envs closed."""
        super().stop()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Self:
        """``with config.build() as algo:`` stops the algorithm however the block ends."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def cleanup(self) -> None:
        """Stop the runners and learners (called by ``stop()``)."""
        self.env_runner_group.stop()
        if getattr(self, "learner_group", None) is not None:
            self.learner_group.stop()  # type: ignore[union-attr]
        if self._evaluation_runner is not None:
            self._evaluation_runner.stop()

    @property
    def checkpoint_path(self) -> Path | None:  # pragma: no cover - convenience only
        """Unused; kept out of Tune's way."""
        return None


def _wants_multi_agent(config: Any) -> bool:
    if isinstance(config, AlgorithmConfig):
        return config.is_multi_agent
    return isinstance(config, dict) and bool(config.get("policies"))


def _resolve(path: str | Path) -> Path:
    """A checkpoint directory as given, or a run directory's newest verifying checkpoint."""
    resolved, skipped = resolve_checkpoint(path)
    for item in skipped:
        logger.warning("skipping checkpoint %s: %s", item.path, item.reason)
    return resolved
