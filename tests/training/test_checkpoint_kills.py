"""SIGKILL during checkpoint saves: the newest checkpoint of the run always verifies and resumes.

``test_twenty_kills_during_saves`` starts one driver process (no Ray: ``num_env_runners=0``
samples in the process) that builds a tiny PPO once and forks a child 20 times. Each child
trains and saves every iteration into one run directory, exactly as ``rlserve train
--checkpoint-every 1`` does (``Algorithm.save`` of ``checkpoint_<iteration>``, and every other
iteration a replacement of ``checkpoint_final``), and tells the driver on a pipe when a save
starts and ends. The driver SIGKILLs it at a random moment of a save (a quarter of the kills
land after it, in training), then checks every visible ``checkpoint_*`` directory, resolves
the run's latest checkpoint, rebuilds the algorithm from the run directory and trains one
more iteration — the next child forks from that resumed algorithm. Forking instead of
starting 20 interpreters keeps the 20 kills to seconds.

``test_kill_rlserve_train_then_resume_the_run`` is the real thing once: ``rlserve train
--checkpoint-every 1`` SIGKILLed while training, then ``rlserve train --resume RUN_DIR``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from training.checkpoints import verify_checkpoint
from training.run_directory import latest_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

REPO_ROOT = Path(__file__).resolve().parents[2]
RLSERVE = shutil.which("rlserve", path=str(Path(sys.executable).parent)) or "rlserve"
KILLS = 20
SAVE_STARTS, WRITE_STARTS, SAVE_ENDS = b"s", b"w", b"d"
ATOMIC_WRITER = "write_directory_atomically"  # formats.safeio's, as training.checkpoints uses it


def _visible_checkpoints(run_dir: Path) -> dict[str, str | None]:
    """Each ``checkpoint_*`` directory and why it fails to verify (``None``: it verifies)."""
    found: dict[str, str | None] = {}
    for path in sorted(run_dir.glob("checkpoint_*")):
        try:
            verify_checkpoint(path)
            found[path.name] = None
        except ValueError as err:  # CheckpointError
            found[path.name] = str(err)
    return found


def _leftovers(run_dir: Path) -> set[str]:
    """The atomic writer's hidden siblings (``.checkpoint_*.tmp-*``, ``.old-*``) in the run."""
    return {p.name for p in run_dir.iterdir() if p.name.startswith(".")}


def _mark_atomic_writes(mark: Any) -> Any:
    """Call ``mark()`` as each checkpoint's atomic directory write begins (observation only).

    Returns:
        A function that puts the real writer back.
    """
    from training import checkpoints

    real = getattr(checkpoints, ATOMIC_WRITER)

    def marked(*args: Any, **kwargs: Any) -> Any:
        mark()
        return real(*args, **kwargs)

    setattr(checkpoints, ATOMIC_WRITER, marked)
    return lambda: setattr(checkpoints, ATOMIC_WRITER, real)


def _save_forever(algo: Any, run_dir: Path, pipe: int) -> None:
    """The child: the ``rlserve train --checkpoint-every 1`` loop, signalling each save."""
    _mark_atomic_writes(lambda: os.write(pipe, WRITE_STARTS))
    while True:
        algo.train()
        os.write(pipe, SAVE_STARTS)
        algo.save(str(run_dir / f"checkpoint_{algo.iteration:06d}"))
        if algo.iteration % 2 == 0:  # the replace path too: rename aside, rename in
            algo.save(str(run_dir / "checkpoint_final"))
        os.write(pipe, SAVE_ENDS)


def _aim(n: int, rng: random.Random, timing: dict[str, float]) -> tuple[bytes, float]:
    """After which marker, and how long after it, kill ``n`` comes.

    Half the kills a uniform moment into the atomic directory write, a quarter anywhere in
    a save, a quarter after a save (in training).
    """
    if n % 2 == 0:
        return WRITE_STARTS, rng.uniform(0, timing["write_s"])
    if n % 4 == 1:
        return SAVE_STARTS, rng.uniform(0, timing["save_s"])
    return SAVE_STARTS, rng.uniform(timing["save_s"], 4 * timing["save_s"])


def _kill_one(
    algo: Any, run_dir: Path, rng: random.Random, timing: dict[str, float], n: int
) -> str:
    """Fork a saving child and SIGKILL it; return where the kill landed.

    The child's last marker says where it really was: ``"write"`` (in the atomic write),
    ``"save"`` (in ``save``, before its atomic write), ``"train"`` (between saves).
    """
    marker, delay = _aim(n, rng, timing)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into the driver's code
        os.close(read_end)
        try:
            _save_forever(algo, run_dir, write_end)
        finally:
            os._exit(1)
    os.close(write_end)
    stream = bytearray()
    try:
        target = rng.randint(1, 3)  # at the 1st, 2nd or 3rd such marker of this child
        while stream.count(marker) < target:
            chunk = os.read(read_end, 1)
            if not chunk:
                raise AssertionError(f"kill {n}: the child exited before saving")
            stream += chunk
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        while chunk := os.read(read_end, 4096):
            stream += chunk
    finally:
        os.close(read_end)
    return {WRITE_STARTS: "write", SAVE_STARTS: "save"}.get(bytes(stream[-1:]), "train")


def _time_saves(algo: Any, scratch: Path) -> dict[str, float]:
    """Median seconds of a whole save and of its atomic write, to aim the kills."""
    entered: list[float] = []
    unmark = _mark_atomic_writes(lambda: entered.append(time.perf_counter()))
    saves, writes = [], []
    try:
        for i in range(5):
            begin = time.perf_counter()
            algo.save(str(scratch / f"c{i}"))
            end = time.perf_counter()
            saves.append(end - begin)
            writes.append(end - entered[-1])
    finally:
        unmark()
    shutil.rmtree(scratch)
    return {"save_s": statistics.median(saves), "write_s": statistics.median(writes)}


def drive(run_dir: str, kills: int, seed: int) -> None:
    """The driver process: build once, fork and kill ``kills`` times, print the figures."""
    import torch

    from tests.helpers.configs import tiny_ppo
    from training import Algorithm

    torch.set_num_threads(1)  # no thread pool for the forked children to inherit half-held
    started = time.perf_counter()
    rng = random.Random(seed)
    root = Path(run_dir)
    algo = tiny_ppo(num_env_runners=0).build()
    algo.train()
    timing = _time_saves(algo, root.parent / "scratch")
    algo.save(str(root / f"checkpoint_{algo.iteration:06d}"))
    figures: dict[str, Any] = {
        "kills": 0,
        "landed": {"write": 0, "save": 0, "train": 0},
        "kills_leaving_tmp": 0,
        "kills_leaving_old": 0,
        "broken_visible": [],
        "resumed": 0,
        "save_ms": round(timing["save_s"] * 1000, 1),
        "write_ms": round(timing["write_s"] * 1000, 1),
    }
    for n in range(kills):
        before = _leftovers(root)
        figures["landed"][_kill_one(algo, root, rng, timing, n)] += 1
        figures["kills"] += 1
        new = _leftovers(root) - before
        figures["kills_leaving_tmp"] += any(".tmp-" in name for name in new)
        figures["kills_leaving_old"] += any(".old-" in name for name in new)
        visible = _visible_checkpoints(root)
        figures["broken_visible"] += [f"{k}: {why}" for k, why in visible.items() if why]
        newest = max(
            verify_checkpoint(root / name)["iteration"]
            for name, why in visible.items()
            if why is None
        )
        assert verify_checkpoint(latest_checkpoint(root))["iteration"] == newest
        algo.stop()
        algo = Algorithm.from_checkpoint(root, num_env_runners=0)
        assert algo.iteration == newest, (algo.iteration, newest)
        algo.train()  # it resumes: the next child forks from here
        assert algo.iteration == newest + 1
        figures["resumed"] += 1
    algo.save(str(root / "checkpoint_final"))  # the next save clears what the kills left
    algo.stop()
    figures["leftover_dirs"] = len(_leftovers(root))
    figures["checkpoints"] = len(list(root.glob("checkpoint_*")))
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))


def test_twenty_kills_during_saves(tmp_path: Path) -> None:
    """20 SIGKILLs during checkpoint saves: 20/20 times the latest verifies and resumes."""
    run_dir = tmp_path / "run"
    code = "import sys; from tests.training.test_checkpoint_kills import drive; "
    code += "drive(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, str(run_dir), str(KILLS), "19"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=240,
        check=False,
    )
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-4000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"checkpoint kills: {figures}, test wall {wall:.1f} s")
    assert figures["kills"] == KILLS
    assert figures["broken_visible"] == []  # never an empty or partial checkpoint_* dir
    assert figures["resumed"] == KILLS  # 20/20: the latest verified, loaded and trained on
    # The kills really hit saves, and inside the atomic write (not only training between).
    assert figures["landed"]["write"] + figures["landed"]["save"] >= KILLS // 2, figures
    assert figures["kills_leaving_tmp"] >= 3, figures
    assert figures["leftover_dirs"] == 0, figures  # and nothing of them piles up


def test_kill_rlserve_train_then_resume_the_run(tmp_path: Path) -> None:
    """The real command once: SIGKILL ``rlserve train --checkpoint-every 1``, resume its run."""
    run_dir = tmp_path / "run"
    tiny = ["--set", "train_batch_size=64", "--set", "minibatch_size=32", "--set", "num_epochs=1"]
    every = ["--checkpoint-every", "1", "--checkpoint-dir", str(run_dir)]
    proc = subprocess.Popen(
        [RLSERVE, "train", "--env", "CartPole-v1", "--stop-iters", "100000", *tiny, *every],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded by pytest's per-test timeout
            if line.startswith("iter    3"):
                break
        time.sleep(random.Random(7).uniform(0.0, 0.2))  # somewhere in a later iteration
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    visible = _visible_checkpoints(run_dir)
    assert visible and all(why is None for why in visible.values()), visible
    newest = max(verify_checkpoint(run_dir / name)["iteration"] for name in visible)
    assert newest >= 3
    # What the kill used to leave (Trainable.save made the directory first): an empty newer
    # checkpoint. The resume names it, passes over it, and the run's next save replaces it.
    empty = run_dir / f"checkpoint_{newest + 1:06d}"
    empty.mkdir()
    out = subprocess.run(
        [RLSERVE, "train", "--resume", str(run_dir), "--stop-iters", str(newest + 1), *every],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: skipping checkpoint {empty}: metadata.json is missing; this is not a "
        "checkpoint directory or it was not written completely"
    ], out.stderr
    assert f"resuming from {run_dir / f'checkpoint_{newest:06d}'}" in out.stdout
    results = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert results[-1]["training_iteration"] == newest + 1
    assert verify_checkpoint(empty)["iteration"] == newest + 1  # replaced by a complete one
    assert verify_checkpoint(run_dir / "checkpoint_final")["iteration"] == newest + 1
