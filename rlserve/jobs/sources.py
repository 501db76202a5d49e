"""``rlserve evaluate``'s options and policy sources: checkpoint, artifact or served URL.

:func:`open_source` works out what a source is and verifies it without loading the policy; the
result, a :class:`PolicySource`, is small enough to send to every Ray worker. :class:`EnvSpec`
names the env the episodes are played in.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from formats.errors import RlserveError
from formats.safeio import read_json, sha256_file, verify_directory

__all__ = ["EnvSpec", "EvaluationError", "EvaluationOptions", "PolicySource", "open_source"]

logger = logging.getLogger(__name__)


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
    session: bool = False
    """URL source: play over a WebSocket session per worker, not an HTTP request per step."""
    address: str | None = None
    """The Ray cluster the workers run on (``None``: a private Ray on this machine)."""

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
        if self.address is not None and self.num_workers == 0:
            raise EvaluationError("--address needs --num-workers >= 1 (0 plays in this process)")
        if not _is_url(self.source) and self.session:
            raise EvaluationError("--session applies only to an http(s):// URL source")
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
    session: bool = False
    """URL source: actions over a WebSocket session instead of one HTTP request each."""

    def describe(self) -> str:
        """One line naming the source, e.g. ``artifact a/b (PPO, version 6d4f...)``."""
        name = f" policy {self.policy!r}" if self.policy else ""
        details = [self.algorithm]
        details += [f"version {self.version}"] if self.version else []
        details += [f"iteration {self.iteration}"] if self.iteration is not None else []
        over = " over a session" if self.session else ""
        return f"{self.kind} {self.location}{name}{over} ({', '.join(details)})"


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

    artifact = load_artifact(path)
    manifest = artifact.manifest
    env, env_config = _source_checkpoint_env(
        Path(manifest.source_checkpoint), manifest.source_metadata_sha256
    )
    return PolicySource(
        "artifact",
        str(path),
        manifest.algorithm,
        artifact.version,  # recomputed from the verified content
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
