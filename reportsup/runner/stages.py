"""Steps that run once and hand their result to later steps: the shared machinery of the runners that
chain ``train.py`` runs (the spine demo's stages, :mod:`reportsup.runner.spine_pipeline`; the Cross-DL
discretizer -> pseudo labels -> analyzer chain, :mod:`reportsup.runner.pseudo_label_chain`).

A step lives in a folder. :func:`once` builds it in a fresh ``attempt-<time>-<pid>`` sub-folder under a
file lock and records its result in ``DONE.json`` (written last, atomically): a later caller, a DDP rank
of the same job or a resumed chain reads that result instead of rebuilding, and an interrupted attempt
is left where it was (never overwritten) while a new attempt starts beside it. :func:`train_stage` runs
``train.py`` as the separate process a user would start, with its log beside its outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock
from lightning.pytorch.utilities import rank_zero_info

from reportsup.contracts.run_dir import STAGE_LOG, best_checkpoints, checkpoints_dir, read_json, write_json
from reportsup.runner.setup import PROJECT_ROOT

#: a step folder's marker (not a run file): the result of the attempt that finished
DONE_JSON = "DONE.json"

#: environment of a distributed or SLURM parent that must not reach a stage's own single-process run
PARENT_RUN_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
)


def done(folder: str | Path) -> dict[str, Any] | None:
    """The recorded result of the step in ``folder``, or None when no attempt has finished."""
    path = Path(folder) / DONE_JSON
    return read_json(path) if path.is_file() else None


def once(folder: Path, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """``build(attempt folder)`` once; its result is kept in ``folder/DONE.json`` and returned to every
    later caller. An interrupted attempt is left in its own folder and a new attempt starts."""
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".lock")):
        finished = done(folder)
        if finished is not None:
            return finished
        name = f"attempt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        attempt, n = folder / name, 1
        while attempt.exists():  # a retry in the same second: never reuse an interrupted attempt's folder
            n += 1
            attempt = folder / f"{name}-{n}"
        result = build(attempt)
        write_json(folder / DONE_JSON, result)
        return result


def train_stage(overrides: list[str], run_dir: Path, what: str, label: str = "spine demo") -> Path:
    """Run ``train.py`` with ``overrides`` into ``run_dir`` (one process, CPU or one GPU); its best
    checkpoint. ``label`` names the chain in log lines and errors."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / STAGE_LOG
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in PARENT_RUN_VARIABLES and not k.startswith(("SLURM_", "PL_", "TORCHELASTIC_"))
    }
    command = [
        sys.executable,
        str(Path(PROJECT_ROOT) / "train.py"),
        *overrides,
        f"hydra.run.dir={run_dir}",
        "hydra.mode=RUN",
        "trainer.devices=1",
        "trainer.strategy=auto",
        "logger=csv",
    ]
    rank_zero_info(f"[reportsup] {label}: training {what} ({log})")
    with log.open("w") as out:
        proc = subprocess.run(
            command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(
            f"{label}: the {what} run failed (exit {proc.returncode}); {log} ends with:\n{tail}"
        )
    best = best_checkpoints(run_dir)
    if len(best) != 1:
        raise RuntimeError(
            f"{label}: the {what} run left {len(best)} best checkpoints in {checkpoints_dir(run_dir)}."
        )
    return best[0]
