"""DaMIL losses (Liu et al. 2023, "Image analyzer architecture and training"), each a small function.

Paper formulation (``variant="paper"``, the default):

* segmentation ``L_s``: mean Dice loss over the N regions against the atlas coarse segmentation, at
  every scale (MONAI :class:`~monai.losses.DiceLoss`), averaged over scales;
* region-level MIL ``L_ra``: weighted BCE of the pooled region predictions (max at the first scale,
  dynamic top-k mean after, :mod:`lightning_modules.crossdl.damil.pooling`) with positive weight
  ``sqrt((1 - f_ij + eps) / (f_ij + eps))`` from the training split's positive rates, averaged over the
  N x M cells and over the K scales;
* scan-level MIL ``L_sa``: BCE of the scan prediction (maximum of each abnormality map) against the
  union of all region labels incl. other/unclear, averaged over types and scales;
* total ``lambda * L_s + L_ra + alpha * L_sa``; the MIL losses are 0 for scans whose ``unclear``
  label is positive. The paper says "the MIL loss"; we also zero the scan-level one by default
  (``mask_scan_loss_for_unclear``), since an unclear location can still hide a type.
* the MIL losses do not back-propagate into the region maps S (``detach_region_maps``, default on):
  the paper is silent; the released code stops that gradient ("MIL must not change the organ mask",
  ``tf.stop_gradient`` in ``unet3d/metrics.py``), and without it the MIL gradients, which reach one
  voxel per bag through the max, kept S from learning the atlas segmentation in our demo (Dice loss
  0.61 vs 0.47 after 12 epochs, README "DaMIL").

Released code (``variant="released_code"``, ``liuaohanjsj/Cross-DL`` @ de18ac4,
``unet3d/metrics.py``), for comparison:

1. BCE per voxel averaged over the top-k voxels of S_i * D_j instead of BCE of a pooled prediction,
   also at the first scale (k = 10 there instead of max pooling);
2. k = max(4c, 4) at the finer scale, c counted with t = 0.5 on the coarse grid;
3. positive weights ``sqrt((1 - f') / f')`` from a smoothed rank-1 rate table
   ``f'_ij = n_i. * n_.j / n_..`` / n_scans instead of f_ij;
4. scan loss: per-voxel BCE over the top 10 (coarse) / 80 (fine) voxels of each D_j, positive
   weights from the scan-level rates, not masked for unclear scans;
5. loss weights ``w_seg * L_s + 0.2 * L_ra + 0.02 * L_sa`` (w_seg 1 -> 0.01, halving per epoch);
6. a softmax over the 4 types + "normal" instead of 4 sigmoids (network option);
7. ReduceLROnPlateau (factor 0.5, patience 2) instead of halving from the 3rd epoch, early stopping
   patience 6 on the total validation loss, "epochs" of 8,000 sampled scans (module/experiment options).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from lightning_modules.crossdl.damil.pooling import (
    instance_products,
    multiscale_region_predictions,
    scan_predictions,
    topk_counts,
)

LOG_EPS = 1e-7


def positive_weights(rates: np.ndarray | torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Paper: ``w_ij = sqrt((1 - f_ij + eps) / (f_ij + eps))`` from the training positive rates."""
    f = torch.as_tensor(rates, dtype=torch.float32)
    return torch.sqrt((1 - f + eps) / (f + eps))


def released_code_rates(region_rates: np.ndarray) -> np.ndarray:
    """The released code's smoothed table: outer(row sums, column sums) / total of the rate matrix."""
    r = np.asarray(region_rates, dtype=np.float64)
    total = r.sum()
    return (np.outer(r.sum(1), r.sum(0)) / total) if total > 0 else r


def weighted_bce(
    pred: torch.Tensor,
    target: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    cell_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-scan mean over the cells (all, or those of ``cell_mask``) of
    ``-[w y log p + (1 - y) log(1 - p)]`` (p are probabilities)."""
    p = pred.clamp(LOG_EPS, 1 - LOG_EPS)
    w = 1.0 if pos_weight is None else pos_weight
    loss = -(w * target * torch.log(p) + (1 - target) * torch.log(1 - p))
    if cell_mask is None:
        return loss.flatten(1).mean(1)
    mask = cell_mask.to(loss).expand_as(loss).flatten(1)
    return (loss.flatten(1) * mask).sum(1) / mask.sum(1).clamp_min(1)


def downsample_labels(region_map: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resampling of an integer region map (B, 1, ...) to a head's grid."""
    return F.interpolate(region_map.float(), size=tuple(size), mode="nearest").long()


def region_one_hot(region_map: torch.Tensor, n_regions: int) -> torch.Tensor:
    """(B, 1, ...) integer map (0 = none, i + 1 = region i) -> (B, N, ...) float one-hot without background."""
    one_hot = F.one_hot(region_map[:, 0].clamp(0, n_regions), n_regions + 1)
    return one_hot.movedim(-1, 1)[:, 1:].float()


_DICE = DiceLoss(include_background=True, sigmoid=False, reduction="none")


def segmentation_loss(region_maps: Sequence[torch.Tensor], region_map: torch.Tensor) -> torch.Tensor:
    """Per-scan L_s: Dice loss averaged over the N regions, then over the scales."""
    n = region_maps[0].shape[1]
    per_scale = []
    for s in region_maps:
        target = region_one_hot(downsample_labels(region_map, s.shape[2:]), n)
        per_scale.append(_DICE(s, target).flatten(1).mean(1))
    return torch.stack(per_scale).mean(0)


def region_mil_loss(
    preds: Sequence[torch.Tensor],
    labels: torch.Tensor,
    pos_weight: torch.Tensor,
    cell_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-scan L_ra: weighted BCE of the region predictions, averaged over cells and scales
    (``cell_mask``: only those cells, e.g. one region's row for the single-region ablation)."""
    return torch.stack([weighted_bce(p, labels, pos_weight, cell_mask) for p in preds]).mean(0)


def scan_mil_loss(preds: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Per-scan L_sa: BCE of the scan predictions (max of each map), averaged over types and scales."""
    return torch.stack([weighted_bce(p, labels) for p in preds]).mean(0)


def topk_voxel_bce(
    products: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | float
) -> torch.Tensor:
    """Released code: BCE of each of the top-k voxels (k per bag), averaged over them, then over cells."""
    k = k.clamp(1, products.shape[-1])
    top = torch.topk(products, int(k.max()), dim=-1).values.clamp(LOG_EPS, 1 - LOG_EPS)
    keep = (torch.arange(top.shape[-1], device=top.device) < k.unsqueeze(-1)).to(top.dtype)
    y = labels.unsqueeze(-1)
    w = pos_weight.unsqueeze(-1) if torch.is_tensor(pos_weight) else pos_weight
    per_voxel = -(w * y * torch.log(top) + (1 - y) * torch.log(1 - top))
    return ((per_voxel * keep).sum(-1) / k.to(top.dtype)).flatten(1).mean(1)


def released_region_mil_loss(
    outputs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    labels: torch.Tensor,
    pos_weight: torch.Tensor,
    coarse_k: int = 10,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Released code's region loss: top-10 voxel BCE at the coarse scale, top max(4c, 4) after."""
    losses = []
    for level, (s, d) in enumerate(outputs):
        products = instance_products(s, d)
        if level == 0:
            k = torch.full(products.shape[:3], coarse_k, dtype=torch.long, device=products.device)
        else:
            k = topk_counts(*outputs[level - 1], threshold=threshold, k_scale=4.0, k_min=4)
        losses.append(topk_voxel_bce(products, k, labels, pos_weight))
    return torch.stack(losses).mean(0)


def released_scan_mil_loss(
    outputs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    labels: torch.Tensor,
    pos_weight: torch.Tensor,
    coarse_k: int = 10,
) -> torch.Tensor:
    """Released code's scan loss: top 10 (coarse) / 80 (next scale, x8 voxels) voxels of each D_j."""
    losses = []
    for level, (_, d) in enumerate(outputs):
        flat = d.flatten(2).unsqueeze(1)  # (B, 1, M, V): one "bag" = the whole scan
        k = torch.full(flat.shape[:3], coarse_k * 8**level, dtype=torch.long, device=d.device)
        losses.append(topk_voxel_bce(flat, k, labels.unsqueeze(1), pos_weight.unsqueeze(0)))
    return torch.stack(losses).mean(0)


class DaMILLoss(torch.nn.Module):
    """``lambda * L_s + w_ra * L_ra + alpha * L_sa`` with unclear masking; returns the parts too."""

    def __init__(
        self,
        region_rates: np.ndarray,
        scan_rates: np.ndarray | None = None,
        variant: str = "paper",
        alpha: float = 0.1,
        region_weight: float = 1.0,
        eps: float = 1e-3,
        threshold: float = 0.5,
        k_scale: float = 1.0,
        k_min: int = 1,
        k_region_map: str = "previous",
        mask_scan_loss_for_unclear: bool = True,
        detach_region_maps: bool = True,
    ) -> None:
        super().__init__()
        if variant not in ("paper", "released_code"):
            raise ValueError(f"variant must be 'paper' or 'released_code', got {variant!r}")
        self.variant = variant
        rates = released_code_rates(region_rates) if variant == "released_code" else region_rates
        self.register_buffer("pos_weight", positive_weights(rates, eps if variant == "paper" else 1e-8))
        scan = np.asarray(scan_rates if scan_rates is not None else np.full(self.pos_weight.shape[1], 0.5))
        self.register_buffer("scan_pos_weight", positive_weights(scan, 1e-8))
        self.alpha, self.region_weight = alpha, region_weight
        self.threshold, self.k_scale, self.k_min, self.k_region_map = threshold, k_scale, k_min, k_region_map
        self.mask_scan_loss_for_unclear = mask_scan_loss_for_unclear
        self.detach_region_maps = detach_region_maps

    def region_predictions(self, outputs, regions_override=None) -> list[torch.Tensor]:
        return multiscale_region_predictions(
            outputs, self.threshold, self.k_scale, self.k_min, self.k_region_map, regions_override
        )

    def forward(
        self,
        outputs: Sequence[tuple[torch.Tensor, torch.Tensor]],
        region_map: torch.Tensor | None,
        region_labels: torch.Tensor,
        scan_labels: torch.Tensor,
        unclear: torch.Tensor,
        seg_weight: float,
        regions_override: list[torch.Tensor] | None = None,
        cell_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        keep = 1.0 - unclear.float()
        mil_outputs = [(s.detach(), d) for s, d in outputs] if self.detach_region_maps else outputs
        if self.variant == "paper":
            l_ra = region_mil_loss(
                self.region_predictions(mil_outputs, regions_override),
                region_labels,
                self.pos_weight,
                cell_mask,
            )
            l_sa = scan_mil_loss(scan_predictions(mil_outputs), scan_labels)
            scan_keep = keep if self.mask_scan_loss_for_unclear else torch.ones_like(keep)
        else:
            l_ra = released_region_mil_loss(
                mil_outputs, region_labels, self.pos_weight, threshold=self.threshold
            )
            l_sa = released_scan_mil_loss(mil_outputs, scan_labels, self.scan_pos_weight)
            scan_keep = torch.ones_like(keep)  # released code: scan loss not masked
        zero = torch.zeros_like(l_ra)
        l_s = segmentation_loss([s for s, _ in outputs], region_map) if region_map is not None else zero
        l_ra, l_sa = l_ra * keep, l_sa * scan_keep
        total = seg_weight * l_s + self.region_weight * l_ra + self.alpha * l_sa
        return {
            "loss": total.mean(),
            "segmentation": l_s.mean(),
            "region_mil": l_ra.mean(),
            "scan_mil": l_sa.mean(),
        }
