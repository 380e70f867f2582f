"""Experiment loggers. CSV always; W&B on request (``logger=wandb``), offline when there are no credentials.

Lightning loggers write from rank 0 only, so a DDP job logs once.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info


def wandb_credentials_available() -> bool:
    """An API key in the environment or in ``~/.netrc`` (where ``wandb login`` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return (
            netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("//")[-1])
            is not None
        )
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_offline() -> bool:
    """Log offline: asked for (``WANDB_MODE=offline``) or no credentials to go online with."""
    return os.environ.get("WANDB_MODE") == "offline" or not wandb_credentials_available()


def wandb_logger(
    project: str,
    save_dir: str,
    group: str | None = None,
    tags: Sequence[str] = (),
    name: str | None = None,
    offline: bool | None = None,
    seed: int | None = None,
    job_type: str | None = None,
    **kwargs,
) -> WandbLogger:
    """A :class:`WandbLogger` grouped by experiment name (``group``), typed by ``job_type`` (train, eval,
    sweep) and tagged with the experiment's tags plus ``seed_<split seed>``; offline unless credentials
    exist (or ``offline`` is set)."""
    tags = [*tags, *([f"seed_{seed}"] if seed is not None else [])]
    if offline is None:
        offline = wandb_offline()
    if offline:
        rank_zero_info(
            "[reportsup] W&B: no credentials found, logging offline. Upload later with "
            f"`wandb sync {Path(save_dir) / 'wandb'}/offline-run-*`."
        )
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        group=group,
        tags=list(dict.fromkeys(tags)),
        name=name,
        offline=offline,
        job_type=job_type or "train",
        **kwargs,
    )
