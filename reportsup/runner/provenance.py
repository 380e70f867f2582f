"""``provenance.json``: what produced a run (DESIGN.md, "Run directory contract").

The git commit of the code and whether its tree had uncommitted changes, the reportsup version, the
versions of the packages that change results (torch, lightning, transformers, monai, ...), Python, the
platform, the CPU model and the instruction-set flags that change numerics and speed (AVX-512, AMX
tiles: bf16 on CPU), the GPUs and CUDA, the command line, host, SLURM job and start time. Collected once
at the start of a run by rank 0 (train.py) and written into the run folder (the file name comes from
:mod:`reportsup.contracts.run_dir`). Nothing here may fail a run: what cannot be found is ``null``,
with the reason beside it.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from lightning_modules.common.evaluation import keep_previous
from reportsup.contracts.run_dir import PROVENANCE_JSON, RESOURCES_USED, write_json
from reportsup.runner.setup import PROJECT_ROOT
from reportsup.version import __version__

# Distributions whose versions can change a result (or explain a difference between two runs).
PACKAGES = (
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "transformers",
    "tokenizers",
    "monai",
    "hydra-core",
    "omegaconf",
    "optuna",
    "wandb",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "itk-elastix",
    "nibabel",
    "pydicom",
    "gensim",
)

# /proc/cpuinfo flags that decide which kernels oneDNN and PyTorch run (and so speed, and bf16 results).
CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)

SLURM_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_RESTART_COUNT",
    "SLURM_JOB_NODELIST",
    "SLURM_NNODES",
    "SLURM_NTASKS",
)

GIT_TIMEOUT_S = 10
MAX_LISTED_CHANGES = 50  # a tree with hundreds of changed files says "dirty" just as well


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or f"git {' '.join(args)} exited with {out.returncode}")
    return out.stdout


def git_state(repo: str | Path) -> dict[str, Any]:
    """``commit`` (``git rev-parse HEAD``), ``dirty`` (any change ``git status`` reports: staged,
    unstaged or untracked-and-not-ignored) and the first changed paths; without git or outside a
    repository ``commit`` and ``dirty`` are ``None`` and ``reason`` says why."""
    repo = Path(repo)
    try:
        commit = _git(repo, "rev-parse", "HEAD").strip()
        changes = _git(repo, "status", "--porcelain").splitlines()
    except FileNotFoundError:
        return {"commit": None, "dirty": None, "repo": str(repo), "reason": "git is not installed"}
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as err:
        return {
            "commit": None,
            "dirty": None,
            "repo": str(repo),
            "reason": f"not a usable git repository: {err}",
        }
    return {
        "commit": commit,
        "dirty": bool(changes),
        "repo": str(repo),
        "changes": changes[:MAX_LISTED_CHANGES],
        "n_changes": len(changes),
    }


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (``None``: not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model, the :data:`CPU_FLAGS` it has, and the cores this process may use (``sched_getaffinity``:
    a SLURM allocation or ``taskset`` limits it below ``os.cpu_count``)."""
    model, flags = None, None
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model is None:
                model = value.strip()
            elif key == "flags" and flags is None:
                present = set(value.split())
                flags = [f for f in CPU_FLAGS if f in present]
    except OSError:
        pass  # not Linux: the model from platform, flags unknown
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": model or platform.processor() or None,
        "flags": flags,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
    }


def gpu_info() -> dict[str, Any]:
    """CUDA version, cuDNN version and the name of every visible GPU (none: an empty list)."""
    try:
        import torch
    except ImportError as err:
        return {"devices": [], "reason": f"torch not importable: {err}"}
    info: dict[str, Any] = {"cuda": torch.version.cuda, "devices": []}
    if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
        info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return info


def slurm_info() -> dict[str, str] | None:
    """The SLURM job this run is part of, ``None`` outside SLURM."""
    found = {k.removeprefix("SLURM_").lower(): os.environ[k] for k in SLURM_VARIABLES if k in os.environ}
    return found or None


def collect_provenance(
    repo: str | Path,
    started: datetime | None = None,
    overrides: Sequence[str] | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Everything :mod:`provenance.json <reportsup.runner.provenance>` records; ``repo`` is the clone the
    code runs from, ``overrides`` the Hydra overrides of this run (a multirun job's own, which
    ``sys.argv`` of the launcher does not show)."""
    started = started or datetime.now(UTC)
    return {
        "started": started.isoformat(timespec="seconds"),
        "reportsup_version": __version__,
        "git": git_state(repo),
        "command_line": list(sys.argv if argv is None else argv),
        "overrides": None if overrides is None else list(overrides),
        "cwd": os.getcwd(),
        "hostname": socket.gethostname(),
        "slurm": slurm_info(),
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "packages": package_versions(),
    }


def write_provenance(run_dir: str | Path, provenance: dict[str, Any]) -> Path:
    """``<run_dir>/provenance.json`` (atomic write)."""
    return write_json(Path(run_dir) / PROVENANCE_JSON, provenance)


def record_provenance(
    run_dir: str | Path,
    started: datetime,
    overrides: Sequence[str] | None,
    repo: str | Path = PROJECT_ROOT,
) -> Path:
    """What train.py does at the start of every run (rank 0 only): collect and write ``provenance.json``.
    A resumed run starts again in its own folder: the earlier start's file is kept beside the new one
    (``provenance.<time>.json``), as the other files a resumed run rewrites are."""
    path = Path(run_dir) / PROVENANCE_JSON
    keep_previous(path)
    return write_provenance(run_dir, collect_provenance(repo, started, overrides=overrides))


def resources_used(stage_seconds: dict[str, float]) -> dict[str, Any]:
    """What a run cost: wall seconds per stage (``fit``, ``test``), the process's peak resident memory
    and, on a GPU, its name and peak allocated memory (``torch.cuda.max_memory_allocated``): the
    numbers a benchmark (``benchmarks/damil_learning_curve.py``) reads from each run it starts."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "wall_seconds": {k: round(float(v), 2) for k, v in stage_seconds.items()},
        # ru_maxrss is KiB on Linux
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "gpu_peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
    }


def record_resources(run_dir: str | Path, stage_seconds: dict[str, float]) -> Path:
    """``<run_dir>/resources_used.json`` at the end of a run (rank 0; a resumed run keeps the earlier one)."""
    path = Path(run_dir) / RESOURCES_USED
    keep_previous(path)
    return write_json(path, resources_used(stage_seconds))
