"""Recurrent (LSTM) policies in training: sequences, state bookkeeping, the policy API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from exporters import export_checkpoint, load_artifact
from training import Algorithm, DQNConfig, IMPALAConfig, PPOConfig
from training import columns as cols
from training.algorithms.ppo.module import PPOModule
from training.algorithms.ppo.recurrent import build_sequence_batch
from training.algorithms.ppo.sequences import cut_sequences, episode_starts
from training.config import ConfigError
from training.distributions import ActionDistribution
from training.env_runner import EnvRunner

STATELESS = "training.example_envs:StatelessCartPole"
LSTM = {"use_lstm": True, "lstm_cell_size": 8, "max_seq_len": 4, "fcnet_hiddens": [16]}


def tiny_lstm_ppo(**settings: Any) -> PPOConfig:
    config = (
        PPOConfig()
        .environment(STATELESS)
        .env_runners(num_envs_per_env_runner=3, rollout_fragment_length=10)
        .training(model=LSTM, train_batch_size=30, minibatch_size=8, num_epochs=2)
        .debugging(seed=0)
    )
    config.update_from_dict(settings)
    return config


# ----------------------------------------------------------------- sequences
def test_episode_starts_follow_the_reset_rows() -> None:
    valid = np.array([[1, 1], [0, 1], [1, 1], [1, 0]], bool)
    assert episode_starts(valid).tolist() == [[0, 0], [0, 0], [1, 0], [0, 0]]


def test_cut_sequences_by_hand() -> None:
    # T=5 steps of N=2 envs into L=2: 3 chunks per env, the last padded by one row.
    valid = np.array([[1, 1], [1, 0], [1, 1], [1, 1], [0, 1]], bool)
    rows = np.arange(10, dtype=np.float32).reshape(5, 2)  # row t, env n -> 2t + n
    hidden = np.repeat(rows[:, :, None], 3, axis=2)  # state (T, N, 3): the row's number
    seqs = cut_sequences([rows], [hidden, -hidden], valid, 2)
    # Env 0's chunks first (rows 0-1, 2-3, 4-pad), then env 1's.
    assert seqs.columns[0].tolist() == [[0, 2], [4, 6], [8, 0], [1, 3], [5, 7], [9, 0]]
    assert seqs.state[0][:, 0].tolist() == [0, 4, 8, 1, 5, 9]  # the state at each chunk start
    assert seqs.state[1][:, 0].tolist() == [0, -4, -8, -1, -5, -9]
    assert seqs.mask.tolist() == [[1, 1], [1, 1], [0, 0], [1, 0], [1, 1], [1, 0]]
    # Env 1's row 2 follows its reset row 1: reset there, but it opens a chunk (recorded).
    assert seqs.starts.tolist() == [[0, 0]] * 6


def test_a_reset_inside_a_sequence_is_marked() -> None:
    valid = np.array([[1], [0], [1], [1]], bool)
    seqs = cut_sequences([np.zeros((4, 1))], [np.zeros((4, 1, 2))] * 2, valid, 4)
    assert seqs.starts.tolist() == [[0, 0, 1, 0]]


# ----------------------------------------------------------------- the module and the runner
@pytest.mark.parametrize("previous", [False, True])
def test_training_along_sequences_replays_what_sampling_computed(previous: bool) -> None:
    """The runner's recorded states and resets (and previous actions and rewards), cut into
    sequences, give the learner exactly the log-probabilities the runner sampled with (ratio 1
    before the first update)."""
    model = {**LSTM, "lstm_use_prev_action": previous, "lstm_use_prev_reward": previous}
    config = tiny_lstm_ppo().training(model=model)
    runner = EnvRunner(config, 0)
    module = runner.module
    assert isinstance(module, PPOModule)
    fragment = runner.sample(40)
    assert (~fragment.valid).any(), "no episode ended: the resets went untested"
    h, c = fragment.extras[cols.STATE_IN_H], fragment.extras[cols.STATE_IN_C]
    assert h.shape == (40, 3, 8) and c.shape == (40, 3, 8)
    starts = episode_starts(fragment.valid)
    assert not h[starts].any() and not c[starts].any()  # new episodes start from zeros
    if previous:
        actions, rewards = fragment.extras[cols.PREV_ACTIONS], fragment.extras[cols.PREV_REWARDS]
        assert actions.dtype == np.int64 and rewards.dtype == np.float32
        assert not actions[starts].any() and not rewards[starts].any()
        inside = fragment.valid[:-1] & fragment.valid[1:]  # step t + 1 of the same episode
        np.testing.assert_array_equal(actions[1:][inside], fragment.actions[:-1][inside])
        np.testing.assert_array_equal(rewards[1:][inside], fragment.rewards[:-1][inside])
    with torch.no_grad():
        from training.algorithms.ppo.learner import PPOLearner

        learner = PPOLearner(module, config.hyperparameters, torch.device("cpu"))
        batch = build_sequence_batch(learner, [fragment])
        out = module.forward_train_sequences(
            [leaf.transpose(0, 1) for leaf in batch.obs],
            batch.state,
            batch.starts.transpose(0, 1),
            {key: value.transpose(0, 1) for key, value in batch.previous.items()},
        )
        inputs = out[cols.ACTION_DIST_INPUTS].transpose(0, 1)
        dist = ActionDistribution(module.action_space, inputs.reshape(-1, inputs.shape[-1]))
        logp = dist.log_prob(batch.actions.reshape(-1)).reshape(batch.mask.shape)
    mask = batch.mask
    assert int(mask.sum()) == int(fragment.valid.sum())
    np.testing.assert_allclose(logp[mask].numpy(), batch.logp_old[mask].numpy(), atol=1e-5)
    runner.stop()


def test_the_state_is_memory_the_answer_depends_on() -> None:
    with tiny_lstm_ppo().build() as algo:
        policy = algo.get_policy()
        assert policy.is_recurrent
        model = policy.model
        assert isinstance(model, PPOModule)
        initial = policy.get_initial_state()
        assert [s.shape for s in initial] == [(8,), (8,)] and not any(s.any() for s in initial)
        obs = np.array([0.1, -0.05], np.float32)
        action, state, extra = algo.compute_single_action(obs, explore=False)
        assert action in (0, 1) and extra == {} and [s.shape for s in state] == [(8,), (8,)]
        assert any(s.any() for s in state)  # the step changed the state
        again, state_again, _ = algo.compute_single_action(obs, state=initial, explore=False)
        assert again == action and all(
            np.array_equal(a, b) for a, b in zip(state, state_again, strict=True)
        )
        # Fed back, the state changes the next step's distribution.
        dist_from_initial = model.forward_inference(
            [torch.as_tensor(obs[None])], state=model.initial_state(1)
        )[cols.ACTION_DIST_INPUTS]
        fed = {
            cols.STATE_IN_H: torch.as_tensor(state[0][None]),
            cols.STATE_IN_C: torch.as_tensor(state[1][None]),
        }
        dist_from_state = model.forward_inference([torch.as_tensor(obs[None])], state=fed)[
            cols.ACTION_DIST_INPUTS
        ]
        assert not torch.allclose(dist_from_initial, dist_from_state)
        actions, outs, _ = algo.compute_actions(np.stack([obs, obs]), state_batches=None)
        assert actions.shape == (2,) and [s.shape for s in outs] == [(2, 8), (2, 8)]
        with pytest.raises(ValueError, match=r"state: expected \(1, 8\) per array"):
            algo.compute_single_action(obs, state=[np.zeros(3), np.zeros(3)])


def test_a_feed_forward_policy_answers_as_before() -> None:
    config = PPOConfig().environment("CartPole-v1").debugging(seed=0)
    with config.build() as algo:
        assert algo.get_policy().get_initial_state() == []
        assert algo.compute_single_action(np.zeros(4, np.float32), explore=False) in (0, 1)
        assert algo.compute_actions(np.zeros((3, 4), np.float32), explore=False).shape == (3,)


def test_recurrent_ppo_trains_checkpoints_and_restores(tmp_path: Path) -> None:
    with tiny_lstm_ppo().build() as algo:
        for _ in range(2):
            result = algo.train()
        learner = result["learners"]["default_policy"]
        assert all(np.isfinite(learner[k]) for k in ("policy_loss", "vf_loss", "entropy"))
        assert learner["num_module_steps_trained"] > 0
        _count_steps_in_the_state(algo.get_policy().model)
        path = algo.save(str(tmp_path / "ckpt")).checkpoint.path
        obs = np.array([0.02, 0.01], np.float32)
        state = algo.get_policy().get_initial_state()
        expected = []
        for _ in range(5):
            action, state, _ = algo.compute_single_action(obs, state=state, explore=False)
            expected.append((action, [s.copy() for s in state]))
    with Algorithm.from_checkpoint(path) as restored:
        state = restored.get_policy().get_initial_state()
        for action_before, state_before in expected:
            action, state, _ = restored.compute_single_action(obs, state=state, explore=False)
            assert action == action_before
            for a, b in zip(state, state_before, strict=True):
                np.testing.assert_array_equal(a, b)
    _exported_graphs_carry_the_state(path, tmp_path / "artifact")
    # rlserve evaluate carries the state along each episode, from the initial one.
    from typer.testing import CliRunner

    from rlserve.cli import app
    from serving.episodes import play_episode
    from training.example_envs import StatelessCartPole

    args = ["evaluate", path, "--episodes", "2", "--num-workers", "0", "--json"]
    evaluated = CliRunner().invoke(app, args)
    assert evaluated.exit_code == 0, evaluated.output
    episodes = json.loads(evaluated.stdout)["episodes"]
    with Algorithm.from_checkpoint(path) as restored:
        for episode in episodes:
            state = restored.get_policy().get_initial_state()

            def act(obs: Any, _seed: int | None) -> Any:
                nonlocal state
                action, state, _ = restored.compute_single_action(obs, state=state, explore=False)
                return action

            played = play_episode(StatelessCartPole(), act, episode["seed"])
            assert played.episode_return == episode["return"]
        # Without its state the policy would have pushed right all along.
        always_right = [
            play_episode(StatelessCartPole(), lambda o, s: 1, e["seed"]) for e in episodes
        ]
        assert [e.episode_return for e in always_right] != [e["return"] for e in episodes]


def _count_steps_in_the_state(module: Any) -> None:
    """Weights under which the action depends on the state alone: the LSTM's first cell adds
    ~0.46 per step (input and forget gates open), and the policy pushes right (1) while its
    output is below 0.5, that is on an episode's first step, then left (0). A policy that
    loses its state pushes right forever; a barely trained one answers alike either way.
    """
    assert isinstance(module, PPOModule) and module.lstm is not None
    cell = module.lstm.hidden_size
    with torch.no_grad():
        for param in [*module.lstm.parameters(), *module.pi_head.parameters()]:
            param.zero_()
        gates = module.lstm.bias_ih  # (input, forget, cell, output) blocks of `cell` each
        gates[: 2 * cell] = 10.0
        gates[3 * cell :] = 10.0
        gates[2 * cell] = 0.5
        module.pi_head.weight[0, 0] = 10.0
        module.pi_head.bias[0] = -5.0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (lambda: DQNConfig().environment("CartPole-v1").training(model=LSTM), "train with PPO"),
        (
            lambda: tiny_lstm_ppo(remote_worker_envs=True),
            "remote_worker_envs=True",
        ),
    ],
)
def test_what_recurrence_cannot_do_yet_is_refused_at_build(config: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config().validate()


def test_previous_actions_and_rewards_need_the_lstm() -> None:
    with pytest.raises(ConfigError, match=r"lstm_use_prev_reward.*set use_lstm=True"):
        PPOConfig().environment("CartPole-v1").training(
            model={"lstm_use_prev_reward": True}
        ).validate()


def test_impala_runs_its_lstm_along_each_fragment_from_the_recorded_state() -> None:
    """Trained in turn (no lag), V-trace's importance ratios are exactly 1: the learner
    recomputes the runner's log-probabilities only if it replays the runner's states (and its
    previous actions and rewards)."""
    model = {**LSTM, "lstm_use_prev_action": True, "lstm_use_prev_reward": True}
    config = (
        IMPALAConfig()
        .environment(STATELESS)
        .env_runners(num_envs_per_env_runner=3, rollout_fragment_length=16)
        .training(model=model, train_batch_size=48, min_sample_timesteps_per_iteration=96)
        .debugging(seed=0)
    )
    with config.build() as algo:
        for _ in range(2):
            learner = algo.train()["learners"]["default_policy"]
            assert learner["mean_rho"] == pytest.approx(1.0, abs=1e-5), learner
            assert learner["max_rho"] == pytest.approx(1.0, abs=1e-5), learner
        action, state, _ = algo.compute_single_action(np.zeros(2, np.float32), explore=False)
        assert action in (0, 1) and len(state) == 2


def _exported_graphs_carry_the_state(checkpoint: str, out: Path) -> None:
    """Every format takes and returns the state by name; onnxruntime, fed back its own state
    outputs for 200 steps, answers as compute_single_action does."""
    import onnxruntime as ort

    from training.example_envs import StatelessCartPole

    artifact = load_artifact(export_checkpoint(checkpoint, out))  # self-checked: 200 steps
    manifest = artifact.manifest
    assert manifest.state is not None
    assert [(s.input, s.output, s.shape, s.initial) for s in manifest.state] == [
        ("state_in_h", "state_out_h", ["batch", 8], "zeros"),
        ("state_in_c", "state_out_c", ["batch", 8], "zeros"),
    ]
    assert "lstm" in manifest.graph_contains
    session = ort.InferenceSession(str(artifact.file("onnx")), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["obs_0", "state_in_h", "state_in_c"]
    outputs = [o.name for o in session.get_outputs()]
    assert outputs == ["action_dist_inputs", "actions", "state_out_h", "state_out_c"]
    env = StatelessCartPole()
    obs, _ = env.reset(seed=5)
    graph_state = [np.zeros((1, 8), np.float32)] * 2
    with Algorithm.from_checkpoint(checkpoint) as algo:
        state = algo.get_policy().get_initial_state()
        for _ in range(200):
            action, state, _ = algo.compute_single_action(obs, state=state, explore=False)
            feed = {"obs_0": obs[None], "state_in_h": graph_state[0], "state_in_c": graph_state[1]}
            _, actions, *graph_state = session.run(None, feed)
            assert int(actions[0]) == action
            for a, b in zip(graph_state, state, strict=True):
                np.testing.assert_allclose(a[0], b, rtol=1e-4, atol=1e-5)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset()
                state = algo.get_policy().get_initial_state()
                graph_state = [np.zeros((1, 8), np.float32)] * 2
