"""``IMPALA``: runners sample without waiting; the learner trains on what arrives (V-trace).

The architecture of Espeholt et al. (2018): every remote runner keeps
``max_requests_in_flight_per_env_runner`` sample requests queued, so it samples while the
learner trains and while its weights travel; the driver takes fragments as they finish
(:meth:`EnvRunnerGroup.fetch_ready`), cuts them into train batches for a
:class:`LearnerThread` through a bounded queue, and sends the learner's weights every
``broadcast_interval`` updates without stopping anyone. Fragments carry the weights version
that sampled them, so the results show the policy lag V-trace corrects for.

With ``num_env_runners=0`` the local runner samples a train batch and the learner trains on
it, in turn (no lag, V-trace's weights are 1): the cheap setting for tests and debugging.
"""

from __future__ import annotations

import functools
import time
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from training import metrics as m
from training.algorithm import Algorithm
from training.algorithms.impala.config import IMPALAConfig
from training.algorithms.impala.learner import IMPALALearner
from training.algorithms.ppo.ppo import PPO
from training.checkpoints import flatten_optimizer_state, unflatten_optimizer_state
from training.config import AlgorithmConfig
from training.distributed import LOCAL
from training.env_runner import Fragment
from training.learner_thread import LearnerThread
from training.multi_agent.algorithm import MultiAgentAlgorithm
from training.multi_agent.runner import MultiAgentSample
from training.preprocessing import RunningStat
from training.rl_module import RLModule

__all__ = ["IMPALA", "MultiAgentIMPALA"]

# How long one driver pass waits for a fragment before it looks for new weights to send.
_FETCH_TIMEOUT_S = 0.05

_TrainItem = tuple[list[Fragment], dict[str, Any] | None]


class IMPALA(Algorithm):
    """Importance Weighted Actor-Learner Architecture (asynchronous sampling, V-trace)."""

    config_class: ClassVar[type[AlgorithmConfig]] = IMPALAConfig
    name: ClassVar[str] = "IMPALA"
    supports_lstm: ClassVar[bool] = True
    supports_multi_agent: ClassVar[bool] = True
    learner_class: ClassVar[Any] = IMPALALearner
    learner: IMPALALearner

    @classmethod
    def build_module(
        cls,
        config: AlgorithmConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
    ) -> RLModule:
        """PPO's actor-critic itself (so export and serving treat both alike)."""
        return PPO.build_module(config, observation_space, action_space)

    def setup_learner(self) -> None:
        """The V-trace learner, unless learner actors do the learning.

        The learner thread starts with the first asynchronous iteration.
        """
        if self.learner_group is None:
            self.learner = self.build_learner(self.config, self.module, self.device, LOCAL)
        self.num_updates = 0
        """Gradient steps taken: the version of the weights the runners are sent."""
        self._thread: LearnerThread[_TrainItem] | None = None
        self._pending: list[Fragment] = []
        self._pending_rows = 0
        self._iteration_figures: dict[str, Any] = {}

    def sync_weights(self, weights_version: int | None = None) -> None:
        """Broadcast (and wait), tagging the runners with the learner's update count."""
        version = self.num_updates if weights_version is None else weights_version
        super().sync_weights(version)

    # ----------------------------------------------------------------- training
    def training_step(self) -> dict[str, float]:
        """Train until ``min_sample_timesteps_per_iteration`` env steps have been sampled."""
        if self.config.num_env_runners == 0:
            stats = self._train_in_turn()
        else:
            stats = self._train_asynchronously()
        for entry in stats:
            self.counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME] += int(entry["num_env_steps_trained"])
        return _mean_metrics(stats)

    def _train_in_turn(self) -> list[dict[str, float]]:
        """The local runner samples a train batch, the learner trains on it, weights go back."""
        cfg = self.config
        stats: list[dict[str, float]] = []
        sampled = 0
        start = time.perf_counter()
        while sampled < cfg.min_sample_timesteps_per_iteration:
            fragments = self.sample_fragments(cfg.train_batch_size)
            sampled += sum(f.num_env_steps for f in fragments)
            stats.append(self._update(fragments))
            self.sync_weights()
        elapsed = time.perf_counter() - start
        trained = sum(entry["num_env_steps_trained"] for entry in stats)
        self._iteration_figures = {
            m.NUM_ENV_STEPS_TRAINED_THROUGHPUT: trained / elapsed if elapsed > 0 else 0.0,
            m.WEIGHTS_VERSION: self.num_updates,
        }
        return stats

    def _update(self, fragments: list[Fragment]) -> dict[str, float]:
        """One gradient step, in the driver's learner or on every learner actor."""
        result: dict[str, float] = self.learner_update("update", fragments)
        self.num_updates += 1
        return result

    def _learner_thread(self) -> LearnerThread[_TrainItem]:
        if self._thread is None:
            hyper = self.config.hyperparameters
            self._thread = LearnerThread(
                self._learn,
                self._weights_copy,
                lambda: self.num_updates,
                queue_size=hyper.learner_queue_size,
                broadcast_interval=hyper.broadcast_interval,
            )
            self._thread.start()
        return self._thread

    def _learn(self, item: _TrainItem) -> dict[str, float]:
        """In the learner thread: the newest filter statistics, then one gradient step."""
        fragments, filter_state = item
        if filter_state is not None:
            self.module.obs_filter.set_stats(RunningStat.from_json(filter_state))
        return self._update(fragments)

    def _weights_copy(self) -> dict[str, Any]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.module.state_dict().items()}

    def _train_asynchronously(self) -> list[dict[str, float]]:
        """Take fragments as they arrive, queue train batches, send new weights, repeat."""
        cfg = self.config
        group = self.env_runner_group
        thread = self._learner_thread()
        timestep = m.NUM_ENV_STEPS_SAMPLED_LIFETIME
        start, busy_before = time.perf_counter(), thread.busy_s
        # The driver's own CPU time (this thread's: blocked waits on Ray cost none), so the
        # cost per fragment is what limits how many runners one driver can feed.
        cpu_before = time.thread_time()
        sampled = fragments_taken = 0
        queue_lengths: list[int] = []
        # Read once: a config attribute is a lookup through its sections.
        in_flight = cfg.max_requests_in_flight_per_env_runner
        wanted = cfg.min_sample_timesteps_per_iteration
        while sampled < wanted:
            arrived = group.fetch_ready(in_flight, timeout_s=_FETCH_TIMEOUT_S)
            for fragment, delta in arrived:
                sampled += self._take_arrived(fragment, delta, thread, queue_lengths)
            fragments_taken += len(arrived)
            weights = thread.take_weights()
            if weights is not None:
                version, state_dict = weights
                group.broadcast_weights(state_dict, self.counters[timestep], version)
        thread.drain()  # nothing else may read the module while the learner is updating it
        weights = thread.take_weights()
        if weights is not None:
            group.broadcast_weights(weights[1], self.counters[timestep], weights[0])
        group.push_weights()
        elapsed = time.perf_counter() - start
        stats = thread.take_stats()
        trained = sum(entry["num_env_steps_trained"] for entry in stats)
        driver_s = time.thread_time() - cpu_before
        self._iteration_figures = {
            m.NUM_ENV_STEPS_TRAINED_THROUGHPUT: trained / elapsed if elapsed > 0 else 0.0,
            m.NUM_SAMPLE_REQUESTS_IN_FLIGHT: group.num_in_flight_requests,
            m.NUM_SAMPLE_REQUESTS_DROPPED_LIFETIME: group.num_sample_requests_dropped,
            m.NUM_TRAIN_BATCHES_DROPPED_LIFETIME: thread.num_batches_dropped,
            m.LEARNER_QUEUE_LENGTH_MEAN: float(np.mean(queue_lengths)) if queue_lengths else 0.0,
            m.LEARNER_TIME_SHARE: (thread.busy_s - busy_before) / elapsed if elapsed else 0.0,
            m.DRIVER_MS_PER_FRAGMENT: 1000.0 * driver_s / max(fragments_taken, 1),
            m.WEIGHTS_VERSION: self.num_updates,
        }
        return stats

    def _take_arrived(
        self,
        fragment: Any,
        delta: dict[str, Any] | None,
        thread: LearnerThread[Any],
        queue_lengths: list[int],
    ) -> int:
        """Count an arrived fragment, queue a train batch once enough rows wait; its steps."""
        filter_on = self.module.obs_filter.enabled
        if filter_on and delta is not None:
            self.filter_stat.merge(RunningStat.from_json(delta))
        self.record_fragments([fragment])
        self._pending.append(fragment)
        self._pending_rows += fragment.rewards.size
        if self._pending_rows >= self.config.train_batch_size:
            state = self.filter_stat.to_json() if filter_on else None
            thread.submit((self._pending, state))
            self._pending, self._pending_rows = [], 0
            queue_lengths.append(thread.queue_length)
        return int(fragment.num_env_steps)

    def iteration_results(self) -> dict[str, Any]:
        """Throughput, queue, drops, lag inputs and the driver's cost per fragment."""
        return dict(self._iteration_figures)

    # ----------------------------------------------------------------- checkpoints
    def learner_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Adam's state (learner 0's: all agree) and the update count (the weights version)."""
        tensors, data = self.foreach_learner(_optimizer_state)[0]
        data["num_updates"] = self.num_updates
        return tensors, data

    def set_learner_state(self, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
        """Restore Adam's state (into every learner) and the update count."""
        self.num_updates = int(data["num_updates"])
        self.foreach_learner(
            functools.partial(_restore, tensors=tensors, data=data, num_updates=self.num_updates)
        )

    def cleanup(self) -> None:
        """Stop the learner thread, then the runners."""
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
        super().cleanup()


class MultiAgentIMPALA(MultiAgentAlgorithm, IMPALA):
    """IMPALA on a policy map: a V-trace learner per trained policy, one learner thread.

    Remote runners sample without waiting, as for one policy; each arrived sample's
    fragments wait per policy until a train batch of that policy's rows is there, then go to
    the learner thread, which updates that policy. Every update bumps the one weights
    version all policies are broadcast with.
    """

    def setup_policy_learners(self) -> None:
        """The update count, the learner thread (started with the first iteration), queues."""
        self.num_updates = 0
        self._thread: LearnerThread[Any] | None = None
        self._waiting: dict[str, list[Fragment]] = {pid: [] for pid in self.trained_policies}
        self._learned: list[str] = []  # the policy of each update, in the thread's order
        self._iteration_figures: dict[str, Any] = {}

    def sync_weights(self, weights_version: int | None = None) -> None:
        """Broadcast (and wait), tagging the runners with the update count."""
        version = self.num_updates if weights_version is None else weights_version
        MultiAgentAlgorithm.sync_weights(self, version)

    def train_policies(self) -> dict[str, dict[str, float]]:
        """In turn without remote runners, else asynchronously; metrics per policy."""
        cfg = self.config
        if cfg.num_env_runners == 0:
            stats: list[dict[str, float]] = []
            sampled = 0
            while sampled < cfg.min_sample_timesteps_per_iteration:
                samples = self.sample_multi_agent(cfg.train_batch_size)
                sampled += sum(s.env_steps for s in samples)
                for pid in self.trained_policies:
                    fragments = self.fragments_of(samples, pid)
                    if fragments:
                        stats.append(self._learn((pid, fragments, None)))
                self.sync_weights()
            self._iteration_figures = {m.WEIGHTS_VERSION: self.num_updates}
        else:
            stats = self._train_asynchronously()
        learned, self._learned = self._learned[: len(stats)], self._learned[len(stats) :]
        by_policy: dict[str, list[dict[str, float]]] = {}
        for pid, entry in zip(learned, stats, strict=True):
            by_policy.setdefault(pid, []).append(entry)
            self.counters[m.NUM_ENV_STEPS_TRAINED_LIFETIME] += int(entry["num_env_steps_trained"])
        return {pid: _mean_metrics(entries) for pid, entries in by_policy.items()}

    def _take_arrived(
        self,
        fragment: Any,
        delta: dict[str, Any] | None,
        thread: LearnerThread[Any],
        queue_lengths: list[int],
    ) -> int:
        """Record an arrived sample; queue a policy's train batch once its rows are there."""
        sample: MultiAgentSample = fragment
        for pid, policy_delta in (delta or {}).items():
            self.filter_stats[pid].merge(RunningStat.from_json(policy_delta))
        self.record_multi_agent([sample])
        for pid in self.trained_policies:
            if pid not in sample.fragments:
                continue
            waiting = self._waiting[pid]
            waiting.append(sample.fragments[pid])
            if sum(int(f.valid.sum()) for f in waiting) >= self.config.train_batch_size:
                stat = self.filter_stats.get(pid)
                thread.submit((pid, waiting, None if stat is None else stat.to_json()))
                self._waiting[pid] = []
                queue_lengths.append(thread.queue_length)
        return sample.env_steps

    def _learn(self, item: Any) -> dict[str, float]:
        """One gradient step of one policy (in the learner thread, or in turn)."""
        pid, fragments, filter_state = item
        if filter_state is not None:
            self.modules[pid].obs_filter.set_stats(RunningStat.from_json(filter_state))
        result: dict[str, float] = self.learners[pid].update(fragments)
        self.num_updates += 1
        self._learned.append(pid)
        return result

    def _weights_copy(self) -> dict[str, Any]:
        return {  # a policy map's weights: one dict per policy
            pid: {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
            for pid, module in self.modules.items()
        }

    def policy_learner_state(self, pid: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Policy ``pid``'s Adam state and the update count (the weights version)."""
        tensors, data = _optimizer_state(self.learners[pid])
        data["num_updates"] = self.num_updates
        return tensors, data

    def set_policy_learner_state(
        self, pid: str, tensors: dict[str, torch.Tensor], data: dict[str, Any]
    ) -> None:
        """Restore policy ``pid``'s Adam state and the update count."""
        self.num_updates = int(data["num_updates"])
        _restore(self.learners[pid], tensors, data, self.num_updates)


IMPALA.multi_agent_class = MultiAgentIMPALA


def _mean_metrics(stats: list[dict[str, float]]) -> dict[str, float]:
    """Each metric averaged over the iteration's updates (maxima kept as maxima)."""
    if not stats:
        return {"num_updates": 0.0}
    keys = stats[0].keys()
    merged = {
        key: float(np.max([s[key] for s in stats]))
        if key.endswith("_max")
        else float(np.mean([s[key] for s in stats]))
        for key in keys
    }
    merged["num_env_steps_trained"] = float(sum(s["num_env_steps_trained"] for s in stats))
    merged["num_updates"] = float(len(stats))
    return merged


def _optimizer_state(learner: IMPALALearner) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return flatten_optimizer_state(learner.optimizer.state_dict(), "optimizer")


def _restore(
    learner: IMPALALearner, tensors: dict[str, torch.Tensor], data: dict[str, Any], num_updates: int
) -> None:
    learner.optimizer.load_state_dict(unflatten_optimizer_state(tensors, data, "optimizer"))
    learner.num_updates = num_updates
