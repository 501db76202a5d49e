"""IMPALA's learner: V-trace targets, then one actor-critic gradient step per train batch.

Reads top to bottom like the paper (Espeholt et al., 2018, section 4.2): the learner's policy
and values on every row of the fragments (and the observation after them), V-trace against the
behaviour log-probabilities recorded at sampling time, then the policy gradient weighted by
V-trace's advantages, the value loss towards ``v_s`` and the entropy bonus, all over the valid
rows only (the autoreset rows that follow an episode's end enter no loss).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from training import columns as cols
from training.algorithms.impala.config import IMPALATrainingSection
from training.algorithms.impala.vtrace import vtrace
from training.algorithms.ppo.module import PPOModule
from training.distributed import LOCAL, Shard, all_reduce_gradients, all_reduce_metrics
from training.distributions import ActionDistribution
from training.env_runner import Fragment
from training.optim import clip_gradients, make_adam

__all__ = ["IMPALABatch", "IMPALALearner"]


class IMPALABatch(NamedTuple):
    """Fragments side by side, time-major: ``T`` steps of ``N`` envs in all.

    Attributes:
        obs: Observation leaves, each ``(T + 1, N, ...)``: the last row is the observation
            after the fragment (the bootstrap value's input).
        actions: ``(T, N, ...)`` as sampled.
        behaviour_logp: ``(T, N)`` log-probabilities under the weights that sampled them.
        rewards: ``(T, N)``.
        terminated: ``(T, N)``.
        truncated: ``(T, N)``.
        valid: ``(T, N)``, False on autoreset rows.
        weights_versions: ``(N,)`` the weights version that sampled each column.
        state: A recurrent module's state at each column's first row, ``(N, cell)`` each, as
            the runner recorded it (empty for a feed-forward module).
        previous: The previous action and reward of every row and of the observation after,
            ``(T + 1, N, ...)``, when the LSTM reads them (else empty).
    """

    obs: list[Tensor]
    actions: Tensor
    behaviour_logp: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    valid: Tensor
    weights_versions: np.ndarray
    state: dict[str, Tensor]
    previous: dict[str, Tensor]


class IMPALALearner:
    """Updates an actor-critic :class:`PPOModule` from (possibly stale) fragments.

    Args:
        module: The learner's module (on ``device``).
        config: IMPALA's hyper-parameters.
        device: Where the update runs.
        shard: This learner's place among data-parallel learners (default: the only one):
            each takes its slice of the train batch's trajectories (V-trace runs along each
            trajectory alone), and the gradients are summed over the learners with every
            loss divided by the whole batch's valid rows, so all take one learner's step.
    """

    def __init__(
        self,
        module: PPOModule,
        config: IMPALATrainingSection,
        device: torch.device,
        shard: Shard = LOCAL,
    ) -> None:
        self.module = module
        self.config = config
        self.device = device
        self.shard = shard
        self.optimizer = make_adam(module.parameters(), lr=config.lr)
        self.num_updates = 0
        """Gradient steps taken: the version of the weights the runners are sent."""

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.as_tensor(array, device=self.device)

    def build_batch(self, fragments: list[Fragment]) -> IMPALABatch:
        """Put the fragments side by side (they share ``T``: every runner has one config).

        With data-parallel learners, this learner's slice of the columns (trajectories).
        """
        lengths = {f.rewards.shape[0] for f in fragments}
        if len(lengths) != 1:
            raise ValueError(f"fragments of different lengths {sorted(lengths)} in one batch")
        columns = sum(f.rewards.shape[1] for f in fragments)
        mine = self.shard.slice(torch.arange(columns)).numpy()

        def side_by_side(arrays: list[np.ndarray]) -> Tensor:
            return self._tensor(np.concatenate(arrays, axis=1)[:, mine])

        obs = [
            side_by_side([np.concatenate([o, nxt[None]]) for o, nxt in zip(*pair, strict=True)])
            for pair in zip(
                zip(*(f.obs for f in fragments), strict=True),
                zip(*(f.next_obs for f in fragments), strict=True),
                strict=True,
            )
        ]
        # All columns' versions: the lag figures are the whole batch's on every learner.
        versions = np.concatenate(
            [np.full(f.rewards.shape[1], f.weights_version) for f in fragments]
        )
        return IMPALABatch(
            obs=obs,
            actions=side_by_side([f.actions for f in fragments]),
            behaviour_logp=side_by_side([f.extras[cols.ACTION_LOGP] for f in fragments]).float(),
            rewards=side_by_side([f.rewards for f in fragments]),
            terminated=side_by_side([f.terminated for f in fragments]),
            truncated=side_by_side([f.truncated for f in fragments]),
            valid=side_by_side([f.valid for f in fragments]),
            weights_versions=versions,
            state={
                key: self._tensor(np.concatenate([f.extras[key][0] for f in fragments])[mine])
                for key in (cols.STATE_IN_H, cols.STATE_IN_C)
                if self.module.is_recurrent
            },
            previous={
                key: side_by_side([_with_after(self.module, f, key) for f in fragments])
                for key in self.module.initial_previous(1)
            },
        )

    def update(self, fragments: list[Fragment]) -> dict[str, float]:
        """One gradient step on the fragments; returns the learner metrics."""
        cfg = self.config
        batch = self.build_batch(fragments)
        steps, envs = batch.rewards.shape

        # The learner's policy and values on every row, plus V of the observation after;
        # a recurrent module runs along each column from the state its runner recorded,
        # reset where an episode starts (each fragment is one sequence: no cutting needed).
        if self.module.is_recurrent:
            ended = torch.ones(1, envs, dtype=torch.bool, device=self.device)
            valid = torch.cat([batch.valid, ended])
            starts = torch.zeros_like(valid)
            starts[1:] = ~valid[:-1]
            out = self.module.forward_train_sequences(
                batch.obs, batch.state, starts, batch.previous
            )
            out = {
                key: value.reshape(steps * envs + envs, *value.shape[2:])
                for key, value in out.items()
            }
        else:
            flat = [leaf.reshape(steps * envs + envs, *leaf.shape[2:]) for leaf in batch.obs]
            out = self.module.forward_train(flat)
        dist = ActionDistribution(
            self.module.action_space, out[cols.ACTION_DIST_INPUTS][: steps * envs]
        )
        flat_actions = batch.actions.reshape(steps * envs, *batch.actions.shape[2:])
        target_logp = dist.log_prob(flat_actions).reshape(steps, envs)
        all_values = out[cols.VF_PREDS].reshape(steps + 1, envs)
        values = all_values[:-1]

        # V-trace: value targets and advantages corrected for the runners' policy lag.
        behaviour_logp = batch.behaviour_logp if cfg.vtrace else target_logp.detach()
        targets = vtrace(
            behaviour_logp,
            target_logp.detach(),
            batch.rewards,
            values.detach(),
            all_values[1:].detach(),
            batch.terminated,
            batch.truncated,
            gamma=cfg.gamma,
            clip_rho_threshold=cfg.vtrace_clip_rho_threshold,
            clip_pg_rho_threshold=cfg.vtrace_clip_pg_rho_threshold,
        )

        # Losses over the valid rows: policy gradient, value regression, entropy bonus, each
        # a sum over this learner's rows divided by the whole batch's valid rows.
        mask = batch.valid.float()
        local = float(mask.sum())
        total_rows = all_reduce_metrics({"rows": local}, 1.0, self.device)["rows"]
        count = torch.tensor(max(total_rows, 1.0), device=self.device)
        policy_loss = -(target_logp * targets.pg_advantages * mask).sum() / count
        vf_loss = 0.5 * (((values - targets.vs) ** 2) * mask).sum() / count
        entropy = (dist.entropy().reshape(steps, envs) * mask).sum() / count
        total = policy_loss + cfg.vf_loss_coeff * vf_loss - cfg.entropy_coeff * entropy

        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()  # type: ignore[no-untyped-call]
        all_reduce_gradients(self.module.parameters(), 1.0)  # the sum: each part is /count
        grad_norm = clip_gradients(self.module.parameters(), cfg.grad_clip)
        self.optimizer.step()

        lags = self.num_updates - batch.weights_versions
        self.num_updates += 1
        with torch.no_grad():
            valid = batch.valid
            rhos = targets.rhos[valid]
            vs, predicted = targets.vs[valid], values.detach()[valid]
            variance = float(vs.var()) if vs.numel() > 1 else 0.0
            residual = float((vs - predicted).var()) if vs.numel() > 1 else 0.0
        # The losses are parts of the whole batch's (summed over learners); the ratio
        # statistics are each learner's, weighted by its share of the valid rows.
        metrics = all_reduce_metrics(
            {
                "policy_loss": policy_loss.item(),
                "vf_loss": vf_loss.item(),
                "total_loss": total.item(),
                "entropy": entropy.item(),
            },
            1.0,
            self.device,
        )
        share = local / total_rows if total_rows > 0 else 0.0
        ratios = {
            "mean_rho": float(rhos.mean()) if rhos.numel() else 0.0,
            "max_rho": float(rhos.max()) if rhos.numel() else 0.0,
            "vf_explained_var": 1.0 - residual / variance if variance > 0 else 0.0,
        }
        ratios = all_reduce_metrics(ratios, share, self.device)
        if total_rows == 0:
            ratios = dict.fromkeys(ratios, float("nan"))
        return {
            **metrics,
            **ratios,
            "gradients_global_norm": grad_norm,  # of the all-reduced gradient: the same on all
            "policy_lag_mean": float(lags.mean()),
            "policy_lag_max": float(lags.max()),
            "num_env_steps_trained": total_rows,
            "lr": cfg.lr,
        }


def _with_after(module: PPOModule, frag: Fragment, key: str) -> np.ndarray:
    """A fragment's previous-input column ``key`` with the row after it, ``(T + 1, N, ...)``."""
    after = module.next_previous(frag.actions[-1], frag.rewards[-1], frag.valid[-1])[key]
    return np.concatenate([frag.extras[key], after[None]])
