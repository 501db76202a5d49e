"""AlgorithmConfig / PPOConfig: fluent sections, eager validation, dict forms, build checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from ray import tune
from ray.tune.search.sample import Float

from tests.helpers.configs import tiny_ppo
from training import ConfigError, PPOConfig, UnknownEnvError
from training import metrics as m
from training.config_sections import ModelConfig

# ----------------------------------------------------------------- fluent sections
SECTION_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("environment", {"env": "CartPole-v1", "env_config": {"a": 1}, "clip_actions": False}),
    (
        "env_runners",
        {
            "num_env_runners": 2,
            "num_envs_per_env_runner": 3,
            "rollout_fragment_length": 17,
            "observation_filter": "MeanStdFilter",
            "sample_timeout_s": 5.0,
            "num_cpus_per_env_runner": 0.5,
            "num_gpus_per_env_runner": 0.0,
            "explore": False,
        },
    ),
    (
        "training",
        {
            "gamma": 0.9,
            "lr": 1e-3,
            "train_batch_size": 512,
            "grad_clip": 1.0,
            "lambda_": 0.9,
            "clip_param": 0.3,
            "vf_clip_param": 10.0,
            "entropy_coeff": 0.01,
            "minibatch_size": 64,
            "num_epochs": 3,
            "normalize_advantages": False,
            "lr_schedule_end": 0.1,
        },
    ),
    ("resources", {"num_gpus": 0.0, "num_cpus_for_main_process": 2.0}),
    (
        "fault_tolerance",
        {
            "restart_failed_env_runners": False,
            "ignore_env_runner_failures": True,
            "restart_failed_sub_environments": True,
            "max_num_env_runner_restarts": 7,
        },
    ),
    ("debugging", {"log_level": "DEBUG", "seed": 42}),
    (
        "evaluation",
        {"evaluation_interval": 2, "evaluation_duration": 3, "evaluation_explore": True},
    ),
    ("offline_data", {"output": "/tmp/traces", "output_max_file_size": 4096}),
]


@pytest.mark.parametrize(("method", "kwargs"), SECTION_CALLS, ids=[m for m, _ in SECTION_CALLS])
def test_fluent_section_sets_values_and_returns_config(method: str, kwargs: dict[str, Any]) -> None:
    config = PPOConfig()
    defaults = config.to_dict()
    assert getattr(config, method)(**kwargs) is config
    flat = config.to_dict()
    for key, value in kwargs.items():
        assert getattr(config, key) == value
        assert flat[key] == value
        assert config.get(key) == value
    # Nothing outside the given keys changed.
    assert {k: v for k, v in flat.items() if k not in kwargs} == {
        k: v for k, v in defaults.items() if k not in kwargs
    }


def test_fluent_calls_chain_and_later_calls_keep_earlier_values() -> None:
    config = tiny_ppo().training(lr=1e-3).training(gamma=0.5)
    assert config.lr == 1e-3
    assert config.gamma == 0.5
    assert config.train_batch_size == 64
    assert config.num_envs_per_env_runner == 2
    assert config.env == "CartPole-v1"


def test_framework_accepts_torch_only() -> None:
    config = PPOConfig()
    assert config.framework("torch") is config
    with pytest.raises(ConfigError, match="tf2"):
        config.framework("tf2")


def test_model_settings_in_training() -> None:
    config = PPOConfig().training(model={"fcnet_hiddens": [32, 16], "fcnet_activation": "relu"})
    assert isinstance(config.model, ModelConfig)
    assert config.model.fcnet_hiddens == [32, 16]
    assert config.model.fcnet_activation == "relu"
    assert config.to_dict()["model"]["fcnet_hiddens"] == [32, 16]


# ----------------------------------------------------------------- unknown keys
def test_training_rejects_unknown_key_with_suggestion_and_allowed_keys() -> None:
    with pytest.raises(ConfigError) as info:
        PPOConfig().training(lrr=0.1)
    message = str(info.value)
    assert "'lrr'" in message
    assert "did you mean 'lr'?" in message
    assert "allowed keys:" in message
    for key in ("gamma", "lr", "train_batch_size", "clip_param", "minibatch_size", "model"):
        assert key in message


@pytest.mark.parametrize(
    ("method", "key"),
    [
        ("environment", "env_confg"),
        ("env_runners", "num_env_runner"),
        ("resources", "num_gpu"),
        ("fault_tolerance", "ignore_env_runner_failure"),
        ("debugging", "seeed"),
        ("evaluation", "evaluation_intervall"),
        ("offline_data", "outptu"),
    ],
)
def test_fixed_signature_sections_reject_unknown_key_naming_it(method: str, key: str) -> None:
    config = PPOConfig()
    before = config.to_dict()
    with pytest.raises((ConfigError, TypeError), match=key):
        getattr(config, method)(**{key: 1})
    assert config.to_dict() == before


def test_env_runners_unknown_key_is_config_error_with_suggestion() -> None:
    unknown: dict[str, Any] = {"num_env_runner": 2}
    with pytest.raises(ConfigError, match="did you mean 'num_env_runners'"):
        PPOConfig().env_runners(**unknown)


def test_unknown_model_key_suggests_model_field() -> None:
    with pytest.raises(ConfigError) as info:
        PPOConfig().training(model={"fcnet_hidens": [32]})
    message = str(info.value)
    assert "fcnet_hidens" in message
    assert "did you mean 'fcnet_hiddens'?" in message


def test_unknown_model_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="fcnet_hidens"):
        PPOConfig().training(model={"fcnet_hidens": [32]})


def test_attribute_assignment_of_unknown_setting_fails() -> None:
    config = PPOConfig()
    with pytest.raises(ConfigError, match="'lrr'"):
        config.lrr = 0.1
    with pytest.raises(AttributeError, match="'lrr'"):
        _ = config.lrr


# ----------------------------------------------------------------- wrong types / ranges
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("env_runners", {"num_env_runners": "2"}, "num_env_runners"),
    ("env_runners", {"num_env_runners": 1.5}, "num_env_runners"),
    ("env_runners", {"num_env_runners": -1}, "num_env_runners"),
    ("env_runners", {"num_envs_per_env_runner": 0}, "num_envs_per_env_runner"),
    ("env_runners", {"rollout_fragment_length": 0}, "rollout_fragment_length"),
    ("env_runners", {"rollout_fragment_length": "Auto"}, "rollout_fragment_length"),
    ("env_runners", {"observation_filter": "Foo"}, "observation_filter"),
    ("env_runners", {"sample_timeout_s": 0.0}, "sample_timeout_s"),
    ("env_runners", {"explore": "yes"}, "explore"),
    ("training", {"train_batch_size": True}, "train_batch_size"),
    ("training", {"train_batch_size": 0}, "train_batch_size"),
    ("training", {"gamma": 1.5}, "gamma"),
    ("training", {"gamma": 0.0}, "gamma"),
    ("training", {"lr": 0}, "lr"),
    ("training", {"lr": -1e-3}, "lr"),
    ("training", {"lr": float("nan")}, "lr"),
    ("training", {"lr": "0.001"}, "lr"),
    ("training", {"lambda_": 1.1}, "lambda_"),
    ("training", {"grad_clip": 0.0}, "grad_clip"),
    ("training", {"minibatch_size": 0}, "minibatch_size"),
    ("training", {"model": {"fcnet_hiddens": [0]}}, "model.fcnet_hiddens"),
    ("training", {"model": {"fcnet_hiddens": []}}, "model.fcnet_hiddens"),
    ("training", {"model": {"fcnet_activation": "sigmoid"}}, "model.fcnet_activation"),
    ("training", {"model": {"conv_filters": [[16, 3]]}}, "model.conv_filters"),
    ("environment", {"env": 3}, "env"),
    ("environment", {"env": "  "}, "env"),
    ("environment", {"env_config": [1]}, "env_config"),
    ("resources", {"num_gpus": -1}, "num_gpus"),
    ("fault_tolerance", {"max_num_env_runner_restarts": -1}, "max_num_env_runner_restarts"),
    ("debugging", {"log_level": "LOUD"}, "log_level"),
    ("debugging", {"seed": "0"}, "seed"),
    ("evaluation", {"evaluation_interval": 0}, "evaluation_interval"),
    ("offline_data", {"output_max_file_size": 10}, "output_max_file_size"),
]


@pytest.mark.parametrize(
    ("method", "kwargs", "field"),
    BAD_VALUES,
    ids=[f"{m}-{next(iter(k))}={next(iter(k.values()))!r}" for m, k, _ in BAD_VALUES],
)
def test_bad_value_is_config_error_naming_field(
    method: str, kwargs: dict[str, Any], field: str
) -> None:
    config = PPOConfig()
    before = config.to_dict()
    with pytest.raises(ConfigError) as info:
        getattr(config, method)(**kwargs)
    message = str(info.value)
    assert f"{field}:" in message or f"{field}." in message
    assert f".{method}()" in message
    # A rejected update leaves the config as it was.
    assert config.to_dict() == before


def test_literal_error_lists_allowed_values() -> None:
    with pytest.raises(ConfigError, match="observation_filter") as info:
        PPOConfig().env_runners(observation_filter="Foo")
    assert "MeanStdFilter" in str(info.value)
    assert "NoFilter" in str(info.value)
    with pytest.raises(ConfigError, match="log_level") as info:
        PPOConfig().debugging(log_level="LOUD")
    assert "'LOUD'" in str(info.value)
    assert "DEBUG" in str(info.value)


def test_boundary_values_are_accepted() -> None:
    config = (
        PPOConfig()
        .training(gamma=1.0, lambda_=0.0, lr=1, train_batch_size=1)
        .env_runners(num_env_runners=0, rollout_fragment_length=1)
    )
    assert config.gamma == 1.0
    assert config.lr == 1.0
    assert isinstance(config.lr, float)
    assert config.rollout_fragment_length == 1


def test_ignore_failures_conflicts_with_default_restart() -> None:
    config = PPOConfig()
    with pytest.raises(ConfigError) as info:
        config.fault_tolerance(ignore_env_runner_failures=True)
    assert "ignore_env_runner_failures" in str(info.value)
    assert "restart_failed_env_runners" in str(info.value)
    assert config.ignore_env_runner_failures is False
    assert config.restart_failed_env_runners is True

    ok = PPOConfig().fault_tolerance(
        restart_failed_env_runners=False, ignore_env_runner_failures=True
    )
    assert ok.ignore_env_runner_failures is True
    assert ok.restart_failed_env_runners is False


def test_attribute_assignment_validates() -> None:
    config = PPOConfig()
    config.lr = 0.5
    assert config.lr == 0.5
    assert config.to_dict()["lr"] == 0.5
    with pytest.raises(ConfigError, match="lr"):
        config.lr = 0
    assert config.lr == 0.5
    with pytest.raises(ConfigError, match="num_env_runners"):
        config.num_env_runners = "2"
    assert config.num_env_runners == 0
    config.num_env_runners = 2
    assert config.num_env_runners == 2


# ----------------------------------------------------------------- dict forms
def test_to_dict_json_from_dict_round_trip() -> None:
    config = (
        tiny_ppo()
        .environment(env_config={"render_mode": None})
        .training(
            lr=1e-3,
            grad_clip=None,
            model={
                "fcnet_hiddens": [32, 16],
                "fcnet_activation": "relu",
                "vf_share_layers": True,
                "conv_filters": [[16, 4, 2], [32, 3, 1]],
            },
        )
        .env_runners(observation_filter="MeanStdFilter", explore=False)
        .evaluation(evaluation_interval=3)
    )
    text = json.dumps(config.to_dict())
    restored = PPOConfig.from_dict(json.loads(text))
    assert restored == config
    assert restored is not config
    assert restored.to_dict() == config.to_dict()
    assert restored.model.fcnet_hiddens == [32, 16]
    assert restored.model.conv_filters == [[16, 4, 2], [32, 3, 1]]
    assert restored.model.vf_share_layers is True
    assert restored.grad_clip is None
    # Different values compare unequal.
    restored.lr = 2e-3
    assert restored != config


def test_to_json_dict_records_class_env_by_name() -> None:
    from tests.helpers.envs import CountingEnv

    config = PPOConfig().environment(CountingEnv)
    data = config.to_json_dict()
    assert data["env"] == "tests.helpers.envs:CountingEnv"
    json.dumps(data)
    assert PPOConfig.from_dict(data).env == "tests.helpers.envs:CountingEnv"


def test_to_json_dict_rejects_lambda_env() -> None:
    config = PPOConfig().environment(lambda cfg: None)
    with pytest.raises(ConfigError, match="cannot be recorded"):
        config.to_json_dict()


def test_from_dict_unknown_key_fails_naming_it() -> None:
    data = PPOConfig().to_dict()
    data["lrr"] = 0.1
    with pytest.raises(ConfigError) as info:
        PPOConfig.from_dict(data)
    assert "'lrr'" in str(info.value)
    assert "did you mean 'lr'?" in str(info.value)


def test_from_dict_validates_values() -> None:
    with pytest.raises(ConfigError, match="gamma"):
        PPOConfig.from_dict({"gamma": 2.0})


def test_copy_is_independent() -> None:
    config = tiny_ppo().environment(env_config={"nested": {"a": [1, 2]}})
    clone = config.copy()
    assert clone == config
    assert clone is not config
    clone.training(lr=0.123, model={"fcnet_hiddens": [8]})
    clone.env_runners(num_envs_per_env_runner=5)
    clone.env_config["nested"]["a"].append(3)
    assert config.lr == 3e-4
    assert config.model.fcnet_hiddens == [64, 64]
    assert config.num_envs_per_env_runner == 2
    assert config.env_config == {"nested": {"a": [1, 2]}}
    assert clone != config


def test_to_dict_is_a_snapshot() -> None:
    config = tiny_ppo()
    data = config.to_dict()
    data["model"]["fcnet_hiddens"].append(7)
    data["lr"] = 9.0
    assert config.model.fcnet_hiddens == [64, 64]
    assert config.lr == 3e-4


# ----------------------------------------------------------------- Tune search spaces
def test_tune_search_spaces_accepted_and_in_to_dict() -> None:
    grid = tune.grid_search([1e-3, 1e-4])
    config = tiny_ppo().training(lr=grid, clip_param=tune.uniform(0.1, 0.2))
    flat = config.to_dict()
    assert flat["lr"] == {"grid_search": [1e-3, 1e-4]}
    assert isinstance(flat["clip_param"], Float)
    assert flat["clip_param"].lower == 0.1
    assert flat["clip_param"].upper == 0.2
    assert config.lr == {"grid_search": [1e-3, 1e-4]}
    # Other values in the same section still validate and apply.
    assert config.train_batch_size == 64
    with pytest.raises(ConfigError, match="gamma"):
        config.training(gamma=3.0)
    # A plain value replaces the search space.
    config.training(lr=5e-4)
    assert config.lr == 5e-4
    assert config.to_dict()["lr"] == 5e-4


def test_search_spaces_survive_copy_and_from_dict() -> None:
    config = tiny_ppo().training(lr=tune.grid_search([1e-3, 1e-4]))
    clone = config.copy()
    assert clone.lr == {"grid_search": [1e-3, 1e-4]}
    assert clone == config


def test_build_with_unresolved_search_space_fails() -> None:
    config = tiny_ppo().training(lr=tune.grid_search([1e-3, 1e-4]))
    with pytest.raises(ConfigError, match="search space") as info:
        config.build()
    assert "lr" in str(info.value)
    config = tiny_ppo().training(clip_param=tune.uniform(0.1, 0.2))
    with pytest.raises(ConfigError, match="clip_param"):
        config.build()
    with pytest.raises(ConfigError, match="clip_param"):
        config.to_json_dict()


def test_rejected_update_leaves_search_spaces_unchanged() -> None:
    config = tiny_ppo()
    with pytest.raises(ConfigError, match="gamma"):
        config.training(lr=tune.uniform(0.1, 0.2), gamma=5.0)
    assert config.lr == 3e-4
    assert "lr" not in config._search
    grid = tune.grid_search([1e-3, 1e-4])
    config.training(lr=grid)
    with pytest.raises(ConfigError, match="gamma"):
        config.training(lr=0.1, gamma=5.0)
    assert config.lr == grid


# ----------------------------------------------------------------- build-time checks
def test_build_without_env_fails() -> None:
    with pytest.raises(ConfigError, match="no env"):
        PPOConfig().build()


def test_unknown_gymnasium_id_lists_close_matches() -> None:
    with pytest.raises(UnknownEnvError) as info:
        tiny_ppo("CartPol-v1").build()
    assert "CartPol-v1" in str(info.value)
    assert "CartPole-v1" in str(info.value)


def test_unimportable_entry_point_fails() -> None:
    with pytest.raises(UnknownEnvError, match="NoSuchEnv"):
        tiny_ppo("tests.helpers.envs:NoSuchEnv").build()
    with pytest.raises(UnknownEnvError, match="no_such_module"):
        tiny_ppo("no_such_module:Env").build()


def test_entry_point_env_builds_and_trains() -> None:
    with tiny_ppo("tests.helpers.envs:CountingEnv").build() as algo:
        result = algo.train()
        assert result[m.TRAINING_ITERATION] == 1
        assert result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] > 0
        # CountingEnv episodes are 3 steps with reward 1 each.
        assert result[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN] == 3.0
        assert result[m.ENV_RUNNER_RESULTS][m.EPISODE_LEN_MEAN] == 3.0


def test_class_env_receives_env_config() -> None:
    from tests.helpers.envs import CountingEnv

    with tiny_ppo(CountingEnv, env_config={"episode_len": 5}).build() as algo:
        env = algo.env_runner.env.envs[0].unwrapped
        assert isinstance(env, CountingEnv)
        assert env.episode_len == 5
        fragment = algo.env_runner.sample(13)
        assert fragment.episode_lengths == [5, 5, 5, 5]
        assert fragment.episode_returns == [5.0, 5.0, 5.0, 5.0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_num_gpus_without_cuda_fails_at_build() -> None:
    config = tiny_ppo().resources(num_gpus=1)
    assert config.num_gpus == 1.0
    with pytest.raises(ConfigError, match="num_gpus"):
        config.build()


# ----------------------------------------------------------------- fragment length
def test_rollout_fragment_length_auto() -> None:
    assert PPOConfig().rollout_fragment_length == "auto"
    assert PPOConfig().get_rollout_fragment_length() == 4000
    config = PPOConfig().training(train_batch_size=100)
    assert config.get_rollout_fragment_length() == 100
    config.env_runners(num_envs_per_env_runner=4)
    assert config.get_rollout_fragment_length() == 25
    config.env_runners(num_env_runners=2, num_envs_per_env_runner=3)
    assert config.get_rollout_fragment_length() == 17  # ceil(100 / 6)
    config.training(train_batch_size=1)
    assert config.get_rollout_fragment_length() == 1
    config.env_runners(rollout_fragment_length=32)
    assert config.get_rollout_fragment_length() == 32
