"""Fragments cut into fixed-length training sequences for a recurrent (LSTM) policy.

A runner's fragment is ``T`` steps of ``N`` sub-envs, and it records the state each row was
sampled from. Training replays the policy along sequences of ``max_seq_len`` steps, each
starting from the state the runner had at its first row (RLlib's "stored state"), so a
sequence may begin in the middle of an episode. Episodes may also end inside a sequence:
with gymnasium's next-step autoreset the row after an episode's end is a reset row
(``valid=False``), and the row after that is the new episode's first, where the state is
reset to the initial one (``starts``), as the runner did. The last sequence of a column is
padded; padded and reset rows are masked out of every loss and statistic.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Sequences", "cut_sequences", "episode_starts"]


class Sequences(NamedTuple):
    """``S`` sequences of ``L`` steps, sequence-major: every array is ``(S, L, ...)``.

    Attributes:
        columns: Per-row arrays (observation leaves, actions, advantages, ...), in the order
            given to :func:`cut_sequences`.
        state: The state at each sequence's first row, ``(S, cell)`` each (hidden, cell).
        starts: Where an episode starts inside the sequence (the state is reset there).
        mask: Rows that enter the losses (valid and not padding).
    """

    columns: list[np.ndarray]
    state: list[np.ndarray]
    starts: np.ndarray
    mask: np.ndarray


def episode_starts(valid: np.ndarray) -> np.ndarray:
    """``(T, N)``: rows whose state the runner reset (the row after a reset row).

    Row 0 is never marked: its state is the one recorded for it.
    """
    starts = np.zeros_like(valid, dtype=bool)
    starts[1:] = ~valid[:-1]
    return starts


def cut_sequences(
    columns: list[np.ndarray],
    state: list[np.ndarray],
    valid: np.ndarray,
    max_seq_len: int,
) -> Sequences:
    """Cut time-major ``(T, N, ...)`` arrays into sequences of ``max_seq_len`` steps.

    Args:
        columns: Per-row arrays, each ``(T, N, ...)``.
        state: The state each row was sampled from, each ``(T, N, cell)``.
        valid: ``(T, N)``: rows that are real transitions (reset rows are not).
        max_seq_len: Steps per sequence ``L``.

    Returns:
        The sequences: ``N * ceil(T / L)`` of them, column by column in time order.
    """
    steps, envs = valid.shape
    length = max_seq_len
    chunks = -(-steps // length)
    padded_steps = chunks * length
    starts = episode_starts(valid)

    def cut(array: np.ndarray, fill: float | bool = 0) -> np.ndarray:
        pad = [(0, padded_steps - steps)] + [(0, 0)] * (array.ndim - 1)
        padded = np.pad(array, pad, constant_values=fill)
        # (chunks * L, N, ...) -> (N, chunks, L, ...) -> (N * chunks, L, ...)
        shaped = padded.reshape(chunks, length, envs, *array.shape[2:])
        return np.moveaxis(shaped, 2, 0).reshape(envs * chunks, length, *array.shape[2:])

    first_rows = np.arange(chunks) * length
    seq_state = [np.moveaxis(s[first_rows], 1, 0).reshape(envs * chunks, -1) for s in state]
    seq_starts = cut(starts, False)
    seq_starts[:, 0] = False  # a sequence's first row starts from its recorded state
    return Sequences(
        columns=[cut(column) for column in columns],
        state=seq_state,
        starts=seq_starts,
        mask=cut(valid, False),
    )
