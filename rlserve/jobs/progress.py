"""Training progress for ``rlserve train``: a rich live display on a terminal, lines elsewhere.

On a terminal the display is redrawn four times a second: a headline (iteration, env steps,
mean return, the evaluation's mean return when the iteration evaluated, steps/s, elapsed
time) and one bar per stop criterion with its current value, its target and an estimate of
the time left to reach it. Training stops at the first criterion met, so the overall
estimate is the smallest of them. When output goes to a file or a pipe (CI,
``tee``, a log collector) the same figures are printed as one plain line per iteration, since a
live display would only show its last frame there.

Estimates: iteration and env-step criteria extrapolate the rate since the start; a return
criterion (training's or the evaluation's ``.../episode_return_mean``, as SAC's tuned examples
stop on) extrapolates the least-squares slope of that return over the last few iterations
(marked ``~``: learning curves are not straight lines) and shows ``—`` while it is not rising.
A return bar fills as ``value / target`` for a positive target; for a target at or below zero
(Pendulum's -200, where returns start near -1500) it fills with the share of the way from the
first return seen to the target.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from training.metrics import (
    EPISODE_RETURN_MEAN,
    EPISODE_RETURN_MEAN_PATH,
    EVALUATION_RESULTS,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    TRAINING_ITERATION,
    lookup,
    path,
)

__all__ = ["TrainingProgress", "metric"]

RETURN = EPISODE_RETURN_MEAN_PATH
EVAL_RETURN = path(EVALUATION_RESULTS, EPISODE_RETURN_MEAN_PATH)
STEPS = NUM_ENV_STEPS_SAMPLED_LIFETIME
ITERATION = TRAINING_ITERATION
_LABELS = {
    RETURN: "mean return",
    EVAL_RETURN: "eval return",
    STEPS: "env steps",
    ITERATION: "iterations",
}
_SLOPE_WINDOW = 5


def metric(result: dict[str, Any], path: str) -> float:
    """The number at ``a/b/c`` in a nested result, NaN when it is missing or not a number."""
    try:
        value = lookup(result, path)
    except KeyError:
        return math.nan
    return float(value) if isinstance(value, int | float) else math.nan


@dataclass(frozen=True)
class CriterionStatus:
    """How far one stop criterion is: its current value, target, fraction done and ETA (s)."""

    key: str
    value: float
    target: float
    fraction: float
    eta_s: float | None
    estimated: bool


class TrainingProgress:
    """Shows training progress; a context manager fed each result through :meth:`update`.

    Args:
        console: Where to draw. A terminal gets the live display, anything else plain lines.
        stop: The stop criteria (result key -> threshold), as ``rlserve train`` builds them.
        live: Force the live display on (True) or off (False); default: ``console.is_terminal``.
        clock: Seconds from a monotonic clock (tests pass their own).
    """

    def __init__(
        self,
        console: Console,
        stop: dict[str, float],
        live: bool | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.console = console
        self.stop = dict(stop)
        self.live = console.is_terminal if live is None else live
        self._clock = clock
        self._start = clock()
        self._start_steps: float | None = None
        self._first_iteration = math.nan
        self._result: dict[str, Any] = {}
        self._elapsed = 0.0
        # Per return criterion (and the training return): recent (elapsed, return) points
        # for the slope, and the first return seen (the start of a bar to a target <= 0).
        return_keys = {RETURN, *(key for key in self.stop if _is_return(key))}
        self._returns: dict[str, deque[tuple[float, float]]] = {
            key: deque(maxlen=_SLOPE_WINDOW) for key in return_keys
        }
        self._first_return: dict[str, float] = {}
        self._display: Live | None = None

    def __enter__(self) -> TrainingProgress:
        self._start = self._clock()
        if self.live:
            self._display = Live(
                console=self.console,
                get_renderable=self.render,
                refresh_per_second=4,
                transient=False,
            )
            self._display.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._display is not None:
            self._display.stop()
            self._display = None

    def update(self, result: dict[str, Any]) -> None:
        """Record a training result and show it (a redraw, or one printed line)."""
        self._elapsed = self._clock() - self._start
        self._result = result
        steps = metric(result, STEPS)
        if self._start_steps is None:
            # A resumed run starts from the checkpoint's lifetime totals; rates count this run.
            iter_steps = metric(result, NUM_ENV_STEPS_SAMPLED)
            self._start_steps = steps - iter_steps if math.isfinite(iter_steps) else 0.0
            self._first_iteration = metric(result, ITERATION)
        for key, points in self._returns.items():
            ret = metric(result, key)
            if math.isfinite(ret):
                points.append((self._elapsed, ret))
                self._first_return.setdefault(key, ret)
        if self._display is not None:
            self._display.refresh()
        else:
            self.console.print(self.line(), highlight=False)

    @property
    def steps_per_s(self) -> float:
        """Env steps sampled per second by this run so far."""
        steps = metric(self._result, STEPS)
        if not math.isfinite(steps) or self._elapsed <= 0:
            return 0.0
        return max(0.0, steps - (self._start_steps or 0.0)) / self._elapsed

    def criteria(self) -> list[CriterionStatus]:
        """The status of every stop criterion, in the order they were given."""
        return [self._criterion(key, target) for key, target in self.stop.items()]

    def next_met(self) -> CriterionStatus | None:
        """The criterion estimated to be met first (None while none can be estimated)."""
        timed = [c for c in self.criteria() if c.eta_s is not None]
        return min(timed, key=lambda c: c.eta_s or 0.0) if timed else None

    def eta_s(self) -> float | None:
        """Seconds until the first criterion is met, if any criterion can be estimated."""
        first = self.next_met()
        return first.eta_s if first else None

    def _eta_text(self) -> str:
        first = self.next_met()
        return _duration(first.eta_s, approx=first.estimated) if first else "—"

    def _criterion(self, key: str, target: float) -> CriterionStatus:
        value = metric(self._result, key)
        if _is_return(key):
            fraction = self._return_fraction(key, value, target)
            return CriterionStatus(
                key, value, target, fraction, self._return_eta(key, target), True
            )
        fraction = value / target if math.isfinite(value) and target > 0 else 0.0
        eta = None
        if key == STEPS and self.steps_per_s > 0 and math.isfinite(value):
            eta = max(0.0, target - value) / self.steps_per_s
        elif key == ITERATION and math.isfinite(value) and value > 0:
            # Iterations done by this run: a resumed run's counter starts above 1.
            done_here = value - self._first_iteration + 1
            if done_here > 0 and self._elapsed > 0:
                eta = max(0.0, target - value) * self._elapsed / done_here
        return CriterionStatus(key, value, target, _clip(fraction), eta, False)

    def _return_fraction(self, key: str, value: float, target: float) -> float:
        if not math.isfinite(value):
            return 0.0
        if value >= target:
            return 1.0
        if target > 0:
            return _clip(value / target)
        first = self._first_return.get(key, value)
        return _clip((value - first) / (target - first)) if target > first else 0.0

    def _return_eta(self, key: str, target: float) -> float | None:
        points = self._returns[key]
        if not points:
            return None
        now_r = points[-1][1]
        if now_r >= target:
            return 0.0
        if len(points) < 2:
            return None
        ts = [t for t, _ in points]
        rs = [r for _, r in points]
        t_mean, r_mean = sum(ts) / len(ts), sum(rs) / len(rs)
        var = sum((t - t_mean) ** 2 for t in ts)
        if var <= 0:
            return None
        slope = sum((t - t_mean) * (r - r_mean) for t, r in zip(ts, rs, strict=True)) / var
        return (target - now_r) / slope if slope > 0 else None

    def line(self) -> str:
        """One plain line with the latest figures (what a non-terminal gets per iteration)."""
        result = self._result
        eta_text = f"  eta {self._eta_text()}" if self.next_met() else ""
        evaluated = metric(result, EVAL_RETURN)
        eval_text = f"  eval {evaluated:8.2f}" if math.isfinite(evaluated) else ""
        return (
            f"iter {int(_finite(metric(result, ITERATION))):4d}  "
            f"steps {int(_finite(metric(result, STEPS))):8d}  "
            f"return {metric(result, RETURN):8.2f}{eval_text}  {self.steps_per_s:7.0f} steps/s  "
            f"{self._elapsed:6.1f}s{eta_text}"
        )

    def render(self) -> RenderableType:
        """The live display: headline figures and a bar per stop criterion."""
        elapsed = self._clock() - self._start
        result = self._result
        fields = [
            _field("iteration", f"{int(_finite(metric(result, ITERATION)))}"),
            _field("env steps", f"{int(_finite(metric(result, STEPS))):,}"),
            _field("return", f"{metric(result, RETURN):.1f}" if result else "—"),
        ]
        evaluated = metric(result, EVAL_RETURN)
        if math.isfinite(evaluated):
            fields.append(_field("eval return", f"{evaluated:.1f}"))
        fields += [
            _field("steps/s", f"{self.steps_per_s:,.0f}"),
            _field("elapsed", _duration(elapsed)),
            _field("ETA", self._eta_text()),
        ]
        head = Table.grid(padding=(0, 3))
        for _ in fields:
            head.add_column()
        head.add_row(*fields)
        bars = Table.grid(padding=(0, 2))
        bars.add_column(min_width=12)
        bars.add_column(width=32)
        bars.add_column(justify="right", min_width=20)
        bars.add_column(justify="right", min_width=10)
        for status in self.criteria():
            value = "—" if not math.isfinite(status.value) else f"{status.value:,.6g}"
            eta = _duration(status.eta_s, approx=status.estimated)
            bars.add_row(
                Text(_LABELS.get(status.key, status.key), style="bold"),
                ProgressBar(total=1.0, completed=status.fraction, width=32),
                f"{value} / {status.target:,.6g}",
                f"eta {eta}",
            )
        return Group(head, bars)


def _is_return(key: str) -> bool:
    """Whether ``key`` names a mean return (training's, the evaluation's, any prefix)."""
    return key.rsplit("/", 1)[-1] == EPISODE_RETURN_MEAN


def _field(label: str, value: str) -> Text:
    return Text.assemble((f"{label} ", "dim"), (value, "bold cyan"))


def _duration(seconds: float | None, approx: bool = False) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    whole = round(seconds)
    text = f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"
    return f"~{text}" if approx and whole > 0 else text


def _clip(fraction: float) -> float:
    return min(1.0, max(0.0, fraction)) if math.isfinite(fraction) else 0.0


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
