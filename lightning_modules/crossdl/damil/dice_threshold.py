"""The threshold that binarises DaMIL's abnormality maps for the localisation Dice (Liu et al. 2023,
"Quantification and statistical analysis": Dice of the predicted abnormality on annotated scans).

The paper does not say at which probability it thresholds the maps. ``model.dice_threshold`` is either
a number (0.5 by default, the threshold the discretizer uses for its sentence labels) or
``validation``: per abnormality type, the threshold on :data:`THRESHOLD_GRID` with the highest mean
Dice on the validation scans that have that type's voxels. It is chosen once, at the start of testing,
with the weights being tested (the best checkpoint), so no test scan informs it. A type that no
validation scan has, or whose validation Dice is 0 at every threshold, keeps the fixed fallback, and
the metrics say so (``dice_threshold.source``).

Why: a MIL-trained map is calibrated for its bag maximum (the scan score), not for its voxels. In our
demo the lesion voxels peak around 0.2 (validation Dice 0.28 at 0.15, 0.02 at 0.5), and at 0.5 the
test Dice was 0 for every type in one run and 0.009 for one type in another (bf16 rounding moves it).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from monai.metrics import compute_dice

from lightning_modules.common.monai_batches import plain_tensors

FROM_VALIDATION = "validation"
# 0.05 steps: finer steps would fit the few validation scans of a small study, not the maps.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def check_dice_threshold(value: float | str) -> float | str:
    """``model.dice_threshold`` as given, or a ValueError that names the key and the choices."""
    if value == FROM_VALIDATION:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0.0 < number < 1.0:
        raise ValueError(
            f"model.dice_threshold={value!r}: give a probability between 0 and 1 (e.g. 0.5), or "
            f"'{FROM_VALIDATION}' to choose it per type on the validation scans' voxel masks."
        )
    return number


def interpolated_maps(abnormality: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(B, M, *size) fp32 maps on the voxel-mask grid (the network's finest scale may be coarser)."""
    return F.interpolate(abnormality.float(), size=size, mode="trilinear")


def scan_dice(batch: Mapping[str, Any], maps: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(B, M) Dice of ``maps`` (already on the voxel-mask grid) thresholded per type (``thresholds``:
    (M,)); NaN where a scan has no voxels of a type or no voxel mask (paper: Dice on scans with the
    abnormality)."""
    b, m = maps.shape[:2]
    dice = torch.full((b, m), float("nan"), device=maps.device)
    binary = (maps > thresholds.to(maps).view(1, m, *([1] * (maps.ndim - 2)))).float()
    values = compute_dice(binary, batch["voxel_mask"].float(), ignore_empty=True)
    has = batch.get("has_voxel_mask", torch.ones(b, dtype=torch.bool, device=dice.device)).bool()
    dice[has] = values[has].to(dice)
    return dice


def localisation_dice(
    batch: Mapping[str, Any], abnormality: torch.Tensor, thresholds: torch.Tensor
) -> torch.Tensor:
    """:func:`scan_dice` of the abnormality maps upsampled to the input grid; all NaN without voxel masks."""
    if "voxel_mask" not in batch:
        return torch.full(abnormality.shape[:2], float("nan"), device=abnormality.device)
    return scan_dice(batch, interpolated_maps(abnormality, batch["voxel_mask"].shape[2:]), thresholds)


#: bins of the voxel-level ROC (probabilities in [0, 1]): fine enough that the binned AUROC is within
#: ~1e-3 of the exact one on the demo's maps, small enough to keep per scan (2 x 4 x 256 counts)
VOXEL_BINS = 256


def voxel_histograms(
    batch: Mapping[str, Any], abnormality: torch.Tensor, bins: int = VOXEL_BINS
) -> torch.Tensor:
    """(B, M, 2, bins) counts of the voxels inside the head (``region_mask`` > 0) by map probability bin,
    negatives (index 0) and positives (1) of each type's voxel mask; NaN for a scan without voxel mask.
    Summed over scans they give the voxel-level ROC of a test set (issue 20: are the maps calibrated, or
    do they rank lesion voxels well while no single threshold gives a good Dice?)."""
    b, m = abnormality.shape[:2]
    out = torch.full((b, m, 2, bins), float("nan"))
    if "voxel_mask" not in batch:
        return out
    maps = interpolated_maps(abnormality, batch["voxel_mask"].shape[2:]).clamp(0, 1)
    head = batch["region_mask"].to(maps.device)[:, 0] > 0
    if head.shape != maps.shape[:1] + maps.shape[2:]:  # region mask on another grid: the whole volume
        head = torch.ones_like(maps[:, 0], dtype=torch.bool)
    index = (maps * bins).long().clamp(max=bins - 1)
    truth = batch["voxel_mask"].bool()
    has = batch.get("has_voxel_mask", torch.ones(b, dtype=torch.bool)).bool().cpu()
    for i in range(b):
        if not has[i]:
            continue
        for j in range(m):
            idx, pos = index[i, j][head[i]], truth[i, j][head[i]]
            out[i, j, 0] = torch.bincount(idx[~pos], minlength=bins).float().cpu()
            out[i, j, 1] = torch.bincount(idx[pos], minlength=bins).float().cpu()
    return out


def binned_auroc(histogram: np.ndarray) -> float:
    """AUROC from (2, bins) negative/positive counts (ties within a bin count half), NaN without both."""
    neg, pos = histogram[0][::-1], histogram[1][::-1]  # highest probability first
    if neg.sum() == 0 or pos.sum() == 0:
        return float("nan")
    neg_before = np.cumsum(neg) - neg  # negatives ranked above each bin
    return float(((neg.sum() - neg_before - neg) * pos).sum() + 0.5 * (neg * pos).sum()) / float(
        neg.sum() * pos.sum()
    )


def dice_per_threshold(
    batch: Mapping[str, Any], abnormality: torch.Tensor, grid: np.ndarray = THRESHOLD_GRID
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed Dice (T, M) over the batch's scans that have voxels of a type, and their count (M,)."""
    maps = interpolated_maps(abnormality, batch["voxel_mask"].shape[2:])  # once for the whole grid
    m = maps.shape[1]
    per_threshold = torch.stack([scan_dice(batch, maps, torch.full((m,), float(t))) for t in grid])
    scored = torch.isfinite(per_threshold[0])
    return torch.nan_to_num(per_threshold, nan=0.0).sum(1).cpu(), scored.sum(0).cpu()


@dataclass
class DiceThresholds:
    """One threshold per abnormality type and where it came from (``validation`` or ``fixed``)."""

    values: list[float]
    sources: list[str]
    validation_dice: list[float | None]

    def tensor(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(self.values, dtype=torch.float32, device=device)


def fixed_thresholds(value: float, n_types: int) -> DiceThresholds:
    return DiceThresholds([float(value)] * n_types, ["fixed"] * n_types, [None] * n_types)


def choose_thresholds(
    sums: torch.Tensor, counts: torch.Tensor, fallback: float, grid: np.ndarray = THRESHOLD_GRID
) -> DiceThresholds:
    """Per type, the grid threshold of the highest mean validation Dice (the lowest such on ties)."""
    values, sources, best = [], [], []
    for j in range(sums.shape[1]):
        mean = (sums[:, j] / counts[j].clamp_min(1)).numpy()
        if counts[j] == 0 or mean.max() <= 0:  # nothing to choose from: keep the fixed threshold
            values.append(float(fallback))
            sources.append("fixed")
            best.append(None)
            continue
        i = int(np.argmax(mean))
        values.append(float(grid[i]))
        sources.append(FROM_VALIDATION)
        best.append(float(mean[i]))
    return DiceThresholds(values, sources, best)


def validation_batches(trainer: pl.Trainer, loader) -> int:
    """How many validation batches the trainer's ``limit_val_batches`` (or ``fast_dev_run``) allows."""
    limit = trainer.limit_val_batches
    n = len(loader)
    if isinstance(limit, int):
        return min(limit, n)
    return n if limit >= 1.0 else max(1, int(n * limit))


def validation_thresholds(
    module: pl.LightningModule, trainer: pl.Trainer, fallback: float = 0.5
) -> DiceThresholds:
    """Thresholds chosen on the datamodule's validation loader with ``module.predict_scan``.

    Every rank reads the whole validation set (a plain loader, no distributed sampler), and rank 0's
    choice is broadcast: bf16 rounding may differ between devices, the thresholds must not. Batches are
    prepared as Lightning's loops do (precision input conversion, then the device).
    """
    dm = getattr(trainer, "datamodule", None)
    if dm is None or not callable(getattr(dm, "val_dataloader", None)):
        raise ValueError(
            "model.dice_threshold=validation chooses the threshold on the validation scans, but this test "
            "run has no datamodule with a val_dataloader; test through a DataModule, or give a number."
        )
    loader = dm.val_dataloader()
    sums = torch.zeros(len(THRESHOLD_GRID), module.n_types)
    counts = torch.zeros(module.n_types, dtype=torch.long)
    for batch in itertools.islice(loader, validation_batches(trainer, loader)):
        if "voxel_mask" not in batch:
            break  # the data set has no voxel masks: every type keeps the fallback
        batch = trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(plain_tensors(batch)))
        with trainer.precision_plugin.test_step_context():
            abnormality = module.predict_scan(batch)["abnormality"]
        s, c = dice_per_threshold(batch, abnormality)
        sums += s
        counts += c
    chosen = trainer.strategy.broadcast(choose_thresholds(sums, counts, fallback), src=0)
    if all(source == "fixed" for source in chosen.sources):
        rank_zero_warn(
            f"model.dice_threshold=validation: no validation scan has voxel masks with a Dice above 0 at "
            f"any threshold, so every type keeps the fixed {fallback} (metrics.json says so per type)."
        )
    return chosen
