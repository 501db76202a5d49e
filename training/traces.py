"""Episode traces: one JSON line per finished episode, one file series per EnvRunner.

Files are named ``output-<timestamp>_worker-<index>_<n>.json`` (RLlib's naming); a new ``<n>``
starts once a file passes ``max_file_size`` bytes. Each line holds ``obs`` (the observation
leaves in :func:`formats.leaves.flatten_leaves` order, each a list over the episode's steps),
``actions``, ``rewards``, ``terminated``, ``truncated`` and the episode's ``return`` and
``length``. Observations are those the actions were taken on (the final observation is not
repeated).

A multi-agent runner writes a row per agent step instead (:meth:`TraceWriter.write_agent_rows`):
``agent_id``, ``policy_id`` and ``env_step`` per row beside ``obs`` (per row: its leaves, since
agents' spaces may differ), ``actions``, ``rewards`` (what the action brought until the agent's
next one), ``terminated``, ``truncated``; ``return`` is summed over the agents and ``length``
counts env steps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from training import columns as cols

__all__ = ["TraceWriter", "read_traces"]


class TraceWriter:
    """Collects per-sub-env steps and writes each finished episode as a JSON line.

    Args:
        directory: Output directory (created if missing).
        runner_index: Index of the runner, used in the file name.
        max_file_size: Bytes after which a new file is started.
    """

    def __init__(self, directory: str, runner_index: int, max_file_size: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.runner_index = runner_index
        self.max_file_size = max_file_size
        self._stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        self._file_number = 0
        self._file: IO[str] | None = None
        self._episodes: list[dict[str, list[Any]]] = []

    def start(self, num_envs: int) -> None:
        """Begin fresh episodes for ``num_envs`` sub-envs (drops unfinished ones)."""
        self._episodes = [self._empty() for _ in range(num_envs)]

    @staticmethod
    def _empty() -> dict[str, list[Any]]:
        return {
            cols.OBS: [],
            cols.ACTIONS: [],
            cols.REWARDS: [],
            cols.TERMINATEDS: [],
            cols.TRUNCATEDS: [],
        }

    def record(
        self,
        leaves: list[np.ndarray],
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        valid: np.ndarray,
    ) -> None:
        """Record one vector step; finished episodes are written out."""
        for j in np.flatnonzero(valid):
            episode = self._episodes[j]
            episode[cols.OBS].append([leaf[j].tolist() for leaf in leaves])
            episode[cols.ACTIONS].append(actions[j].tolist())
            episode[cols.REWARDS].append(float(rewards[j]))
            episode[cols.TERMINATEDS].append(bool(terminated[j]))
            episode[cols.TRUNCATEDS].append(bool(truncated[j]))
            if terminated[j] or truncated[j]:
                self._write(episode)
                self._episodes[j] = self._empty()

    def _path(self) -> Path:
        name = f"output-{self._stamp}_worker-{self.runner_index}_{self._file_number}.json"
        return self.directory / name

    def write_agent_rows(
        self, rows: list[dict[str, Any]], episode_return: float, length: int
    ) -> None:
        """Write a multi-agent episode: one row per agent step (see the module doc)."""
        keys = [cols.AGENT_ID, cols.POLICY_ID, cols.ENV_STEP, cols.OBS, cols.ACTIONS]
        keys += [cols.REWARDS, cols.TERMINATEDS, cols.TRUNCATEDS]
        line: dict[str, Any] = {key: [row[key] for row in rows] for key in keys}
        line[cols.EPISODE_RETURN] = float(episode_return)
        line[cols.EPISODE_LENGTH] = int(length)
        self._emit(line)

    def _emit(self, line: dict[str, Any]) -> None:
        if self._file is not None and self._file.tell() >= self.max_file_size:
            self._file.close()
            self._file, self._file_number = None, self._file_number + 1
        if self._file is None:
            self._file = self._path().open("a", encoding="utf-8")
        self._file.write(json.dumps(line, allow_nan=False) + "\n")
        self._file.flush()

    def _write(self, episode: dict[str, list[Any]]) -> None:
        steps = len(episode[cols.REWARDS])
        # Leaves are transposed to one list per leaf over the episode's steps.
        obs = [list(column) for column in zip(*episode[cols.OBS], strict=True)]
        line = {
            **episode,
            cols.OBS: obs,
            cols.EPISODE_RETURN: float(sum(episode[cols.REWARDS])),
            cols.EPISODE_LENGTH: steps,
        }
        self._emit(line)

    def close(self) -> None:
        """Close the current file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def read_traces(directory: str | Path) -> list[dict[str, Any]]:
    """Read every episode from the trace files in ``directory`` (sorted by file name)."""
    episodes: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("output-*_worker-*_*.json")):
        with path.open(encoding="utf-8") as handle:
            episodes.extend(json.loads(line) for line in handle if line.strip())
    return episodes
