"""DaMIL losses (Liu et al. 2023, "Image analyzer architecture and training"), each a small function.

Paper formulation (``variant="paper"``, the default; the value of every option the paper leaves open is
in :mod:`lightning_modules.crossdl.damil.variants` and, with its reason, in ``configs/model/damil.yaml``):

* segmentation ``L_s``: mean Dice loss over the N regions against the atlas coarse segmentation, at
  every scale (MONAI :class:`~monai.losses.DiceLoss`, smoothing ``dice_smooth``), averaged over scales;
  each scale's target is the label map resampled by nearest neighbour (``coarse_target``);
* region-level MIL ``L_ra``: weighted BCE of the pooled region predictions (max at the first scale,
  dynamic top-k mean after, :mod:`lightning_modules.crossdl.damil.pooling`) with positive weight
  ``sqrt((1 - f_ij + eps) / (f_ij + eps))`` from the training split's positive rates, averaged over the
  N x M cells and over the K scales;
* scan-level MIL ``L_sa``: BCE of the scan prediction (maximum of the abnormality map) against the
  union of all region labels incl. other/unclear, averaged over types; the paper's formula has one
  scan prediction, the final (finest) scale's (``scan_loss_scales="finest"``; ``"mean"`` averages
  the BCE over the scales);
* total ``lambda * L_s + L_ra + alpha * L_sa``; the MIL losses are 0 for scans whose ``unclear``
  label is positive. The paper says "the MIL loss"; we also zero the scan-level one by default
  (``mask_scan_loss_for_unclear``), since an unclear location can still hide a type.
* logs are ``ln(p + 1e-8)`` and ``ln(1 - p + 1e-8)`` (as the released code): finite at p = 0 or 1
  without a clamp, which would also stop the gradient of a bag whose product is 0 or 1.
* the MIL losses do not back-propagate into the region maps S (``detach_region_maps``, default on).
  This is **our** choice: the paper is silent, and the released code's paper model (version 85) calls
  its MIL loss with ``stop_gradient=False`` (``unet3d/model/mil_multitask.py``), so its MIL gradients
  do reach S. We detach because, with the MIL gradients in S (which reach one voxel per bag through
  the max), S did not learn the atlas segmentation in our demo: segmentation Dice loss 0.61 vs 0.47
  after 12 epochs (docs/components/damil.md, "Paper fidelity").

Released code (``variant="released_code"``, ``liuaohanjsj/Cross-DL`` @ de18ac4, version 85,
``unet3d/metrics.py``), where it differs:

1. BCE per voxel averaged over the top-k voxels of S_i * D_j instead of BCE of a pooled prediction,
   also at the first scale (k = 10 there instead of max pooling);
2. k = max(8c, 8) / 2 = max(4c, 4) at the finer scale, c counted with t = 0.5 on the coarse grid;
3. positive weights ``sqrt((1 - f') / f')`` with ``f' = min(r + 1e-8, 1 - 1e-8)`` from a smoothed
   rank-1 rate table ``r_ij = n_i. * n_.j / n_..`` instead of f_ij (w = 1e4 where r = 0);
4. regions whose predicted map S_i sums below 0.1 at a scale add nothing to that scale's region loss
   (still counted in the mean over the N regions);
5. scan loss: per-voxel BCE over the top 10 (coarse) / 80 (fine) voxels of each D_j, positive weights
   from the scan-level rates (same form as 3), at both scales, not masked for unclear scans;
6. Dice with smoothing 1, ``1 - (2 I + 1) / (T + P + 1)``; the coarse target is the 2x max-pool of
   the fine one-hot target; a scale whose target is empty (sum below 0.1) has no Dice loss;
7. MIL gradients into S (no ``stop_gradient``);
8. loss weights ``w_seg * L_s + 0.2 * L_ra + 0.02 * L_sa`` (w_seg 1 -> 0.01, halving per epoch);
9. a softmax over the 4 types + "normal" instead of 4 sigmoids (network option);
10. ReduceLROnPlateau (factor 0.5, patience 2) instead of halving from the 3rd epoch, early stopping
    patience 6 on the total validation loss (module/experiment options).

What is not reproduced is listed in docs/components/damil.md ("Released code").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from lightning_modules.crossdl.damil.pooling import (
    k_factor,
    multiscale_region_predictions,
    scan_predictions,
    topk_counts,
    topk_products,
)
from lightning_modules.crossdl.damil.variants import resolve

#: added inside the logs, ln(p + LOG_EPS) (released code: ``K.log(pos + 1e-8)``)
LOG_EPS = 1e-8
#: a target or region map summing below this is empty (released code: ``K.less(K.sum(...), 0.1)``)
RELEASED_EMPTY_SUM = 0.1
#: the released code's top-k at the first scale (``top_k=10``), and its scan loss's (x8 per finer scale)
RELEASED_COARSE_K = 10


def positive_weights(
    rates: np.ndarray | torch.Tensor, eps: float = 1e-3, form: str = "paper"
) -> torch.Tensor:
    """Positive-class weights from positive rates f.

    ``form="paper"``: ``w = sqrt((1 - f + eps) / (f + eps))`` (paper's L_ra);
    ``form="released_code"``: ``f' = min(f + eps, 1 - eps)``, ``w = sqrt((1 - f') / f')`` (``get_new_weights``).
    """
    f = torch.as_tensor(rates, dtype=torch.float64)
    if form == "paper":
        w = torch.sqrt((1 - f + eps) / (f + eps))
    elif form == "released_code":
        f = torch.clamp(f + eps, max=1 - eps)
        w = torch.sqrt((1 - f) / f)
    else:
        raise ValueError(f"form must be 'paper' or 'released_code', got {form!r}")
    return w.float()


def released_code_rates(region_rates: np.ndarray) -> np.ndarray:
    """The released code's smoothed table: outer(row sums, column sums) / total of the rate matrix."""
    r = np.asarray(region_rates, dtype=np.float64)
    total = r.sum()
    return (np.outer(r.sum(1), r.sum(0)) / total) if total > 0 else r


def bce(pred: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Element-wise ``-[w y ln(p + 1e-8) + (1 - y) ln(1 - p + 1e-8)]`` (p are probabilities)."""
    return -(pos_weight * target * torch.log(pred + LOG_EPS) + (1 - target) * torch.log(1 - pred + LOG_EPS))


def weighted_bce(
    pred: torch.Tensor,
    target: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    cell_mask: torch.Tensor | None = None,
    bag_keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-scan mean over the cells (all, or those of ``cell_mask``) of :func:`bce`; ``bag_keep``
    (0/1, broadcast to the cells) zeroes cells without changing the number averaged over."""
    loss = bce(pred, target, 1.0 if pos_weight is None else pos_weight)
    if bag_keep is not None:
        loss = loss * bag_keep.to(loss)
    if cell_mask is None:
        return loss.flatten(1).mean(1)
    mask = cell_mask.to(loss).expand_as(loss).flatten(1)
    return (loss.flatten(1) * mask).sum(1) / mask.sum(1).clamp_min(1)


def occupied_regions(s: torch.Tensor, min_sum: float) -> torch.Tensor:
    """(B, N, 1): 1 where region map S_i sums to at least ``min_sum`` on its grid, else 0."""
    return (s.detach().flatten(2).sum(-1) >= min_sum).to(s.dtype).unsqueeze(-1)


def downsample_labels(region_map: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resampling of an integer region map (B, 1, ...) to a head's grid."""
    return F.interpolate(region_map.float(), size=tuple(size), mode="nearest").long()


def region_one_hot(region_map: torch.Tensor, n_regions: int) -> torch.Tensor:
    """(B, 1, ...) integer map (0 = none, i + 1 = region i, above N counts as N) -> (B, N, ...) float
    one-hot without background (channel i is ``map == i + 1``: the same values as ``F.one_hot`` minus
    its background channel, without its (B, ..., N + 1) int64 tensor and the copy to channels first)."""
    labels = region_map[:, :1].clamp(0, n_regions)
    channels = torch.arange(1, n_regions + 1, device=region_map.device, dtype=labels.dtype)
    return (labels == channels.view(1, -1, *([1] * (region_map.dim() - 2)))).float()


def segmentation_targets(
    region_map: torch.Tensor, shapes: Sequence[Sequence[int]], n_regions: int, coarse_target: str = "nearest"
) -> list[torch.Tensor]:
    """One-hot region targets (B, N, ...) on each grid of ``shapes`` (coarse to fine).

    ``nearest``: every grid's own nearest-neighbour resampling of the label map (regions stay disjoint);
    ``max_pool``: the finest grid's, max-pooled to each coarser grid (released code: a coarse voxel
    belongs to every region that one of its fine voxels belongs to).
    """
    if coarse_target == "nearest":
        return [region_one_hot(downsample_labels(region_map, shape), n_regions) for shape in shapes]
    if coarse_target != "max_pool":
        raise ValueError(f"coarse_target must be 'nearest' or 'max_pool', got {coarse_target!r}")
    targets = [region_one_hot(downsample_labels(region_map, shapes[-1]), n_regions)]
    for shape in reversed(shapes[:-1]):
        finer = targets[0]
        factor = [a // b for a, b in zip(finer.shape[2:], shape, strict=True)]
        targets.insert(0, F.max_pool3d(finer, kernel_size=factor, stride=factor))
    return targets


def segmentation_loss(
    region_maps: Sequence[torch.Tensor],
    region_map: torch.Tensor,
    smooth: float = 1e-5,
    coarse_target: str = "nearest",
    min_target_sum: float | None = None,
) -> torch.Tensor:
    """Per-scan L_s: Dice loss ``1 - (2 I + smooth) / (T + P + smooth)`` averaged over the N regions,
    then over the scales; with ``min_target_sum``, a scale whose target sums below it adds 0."""
    n = region_maps[0].shape[1]
    dice = DiceLoss(
        include_background=True, sigmoid=False, reduction="none", smooth_nr=smooth, smooth_dr=smooth
    )
    targets = segmentation_targets(region_map, [s.shape[2:] for s in region_maps], n, coarse_target)
    per_scale = []
    for s, target in zip(region_maps, targets, strict=True):
        loss = dice(s, target).flatten(1).mean(1)
        if min_target_sum is not None:
            loss = loss * (target.flatten(1).sum(1) >= min_target_sum).to(loss)
        per_scale.append(loss)
    return torch.stack(per_scale).mean(0)


def region_mil_loss(
    preds: Sequence[torch.Tensor],
    labels: torch.Tensor,
    pos_weight: torch.Tensor,
    cell_mask: torch.Tensor | None = None,
    bag_keeps: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-scan L_ra: weighted BCE of the region predictions, averaged over cells and scales
    (``cell_mask``: only those cells, e.g. one region's row for the single-region ablation;
    ``bag_keeps``: per scale, (B, N, 1) 0/1 of the regions that count, :func:`occupied_regions`)."""
    keeps = bag_keeps if bag_keeps is not None else [None] * len(preds)
    return torch.stack(
        [weighted_bce(p, labels, pos_weight, cell_mask, keep) for p, keep in zip(preds, keeps, strict=True)]
    ).mean(0)


def scan_mil_loss(preds: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Per-scan L_sa: BCE of the scan predictions (max of each map), averaged over types and the given scales."""
    return torch.stack([weighted_bce(p, labels) for p in preds]).mean(0)


def topk_bce(
    top: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | float
) -> torch.Tensor:
    """(B, N, M) BCE of each of the first k_ij of the sorted values ``top`` (B, N, M, >= max k), averaged."""
    keep = (torch.arange(top.shape[-1], device=top.device) < k.unsqueeze(-1)).to(top.dtype)
    w = pos_weight.unsqueeze(-1) if torch.is_tensor(pos_weight) else pos_weight
    per_voxel = bce(top, labels.unsqueeze(-1), w)
    return (per_voxel * keep).sum(-1) / k.to(top.dtype)


def topk_voxel_bce(
    products: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | float
) -> torch.Tensor:
    """Released code: (B, N, M) BCE of each of the top-k voxels (k per bag), averaged over them."""
    k = k.clamp(1, products.shape[-1])
    return topk_bce(torch.topk(products, int(k.max()), dim=-1).values, k, labels, pos_weight)


def released_region_mil_loss(
    outputs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    labels: torch.Tensor,
    pos_weight: torch.Tensor,
    threshold: float = 0.5,
    k_grid: str = "fine",
    k_scale: float = 0.5,
    k_min: int = 4,
    min_region_sum: float = RELEASED_EMPTY_SUM,
) -> torch.Tensor:
    """Released code's region loss per scan: top-10 voxel BCE at the coarse scale, top max(4c, 4) after
    (with the default k options), regions whose S sums below ``min_region_sum`` zeroed, mean over the
    N x M cells, then over the scales."""
    losses = []
    for level, (s, d) in enumerate(outputs):
        n_vox = d[0, 0].numel()
        if level == 0:
            k = torch.full((*s.shape[:2], d.shape[1]), RELEASED_COARSE_K, dtype=torch.long, device=d.device)
        else:
            s_prev, d_prev = outputs[level - 1]
            factor = k_factor(k_grid, k_scale, tuple(d.shape[2:]), tuple(d_prev.shape[2:]))
            k = topk_counts(s_prev, d_prev, threshold=threshold, k_scale=factor, k_min=k_min)
        k = k.clamp(1, n_vox)
        top = topk_products(s, d, int(k.max()))  # = topk(instance_products(s, d)), gathered
        cells = topk_bce(top, k, labels, pos_weight) * occupied_regions(s, min_region_sum)
        losses.append(cells.flatten(1).mean(1))
    return torch.stack(losses).mean(0)


def released_scan_mil_loss(
    outputs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    labels: torch.Tensor,
    pos_weight: torch.Tensor,
    scales: str = "mean",
) -> torch.Tensor:
    """Released code's scan loss per scan: BCE over the top 10 (coarse) / 80 (next scale, x8 voxels)
    voxels of each D_j, mean over types, then over the scales (``scales="finest"``: the last only)."""
    losses = []
    for level, (_, d) in enumerate(outputs):
        flat = d.flatten(2).unsqueeze(1)  # (B, 1, M, V): one "bag" = the whole scan
        k = torch.full(flat.shape[:3], RELEASED_COARSE_K * 8**level, dtype=torch.long, device=d.device)
        losses.append(
            topk_voxel_bce(flat, k, labels.unsqueeze(1), pos_weight.unsqueeze(0)).flatten(1).mean(1)
        )
    return losses[-1] if scales == "finest" else torch.stack(losses).mean(0)


class DaMILLoss(torch.nn.Module):
    """``lambda * L_s + w_ra * L_ra + alpha * L_sa`` with unclear masking; returns the parts too.

    Options left ``None`` take the variant's value (:mod:`lightning_modules.crossdl.damil.variants`).
    """

    def __init__(
        self,
        region_rates: np.ndarray,
        scan_rates: np.ndarray | None = None,
        variant: str = "paper",
        alpha: float | None = None,
        region_weight: float | None = None,
        eps: float | None = None,
        threshold: float = 0.5,
        k_grid: str | None = None,
        k_scale: float | None = None,
        k_min: int | None = None,
        k_region_map: str = "previous",
        mask_scan_loss_for_unclear: bool | None = None,
        detach_region_maps: bool | None = None,
        dice_smooth: float | None = None,
        coarse_target: str | None = None,
        min_region_sum: float | None = None,
        scan_loss_scales: str | None = None,
    ) -> None:
        super().__init__()
        given = {
            "alpha": alpha,
            "region_weight": region_weight,
            "eps": eps,
            "k_grid": k_grid,
            "k_scale": k_scale,
            "k_min": k_min,
            "mask_scan_loss_for_unclear": mask_scan_loss_for_unclear,
            "detach_region_maps": detach_region_maps,
            "dice_smooth": dice_smooth,
            "coarse_target": coarse_target,
            "min_region_sum": min_region_sum,
            "scan_loss_scales": scan_loss_scales,
        }
        options, _ = resolve(variant, {k: v for k, v in given.items() if v is not None}, False)
        self.variant = variant
        self.options = options
        self.alpha, self.region_weight, self.eps = options["alpha"], options["region_weight"], options["eps"]
        self.threshold, self.k_region_map = threshold, k_region_map
        self.k_grid, self.k_scale, self.k_min = options["k_grid"], options["k_scale"], options["k_min"]
        self.mask_scan_loss_for_unclear = options["mask_scan_loss_for_unclear"]
        self.detach_region_maps = options["detach_region_maps"]
        self.dice_smooth, self.coarse_target = options["dice_smooth"], options["coarse_target"]
        self.min_region_sum, self.scan_loss_scales = options["min_region_sum"], options["scan_loss_scales"]
        region_rates = np.asarray(region_rates)
        self.register_buffer("pos_weight", torch.ones(region_rates.shape))
        self.register_buffer("scan_pos_weight", torch.ones(region_rates.shape[1]))
        self.set_rates(region_rates, scan_rates)

    def set_rates(self, region_rates: np.ndarray, scan_rates: np.ndarray | None = None) -> None:
        """Positive weights from the training split's rates (region x type, and per type for the
        released code's scan loss; the paper's scan loss is unweighted)."""
        released = self.variant == "released_code"
        table = released_code_rates(region_rates) if released else region_rates
        self.pos_weight.copy_(positive_weights(table, self.eps, self.variant))
        scan = np.full(self.pos_weight.shape[1], 0.5) if scan_rates is None else np.asarray(scan_rates)
        self.scan_pos_weight.copy_(positive_weights(scan, self.eps, self.variant))

    def region_predictions(self, outputs, regions_override=None) -> list[torch.Tensor]:
        return multiscale_region_predictions(
            outputs,
            self.threshold,
            self.k_scale,
            self.k_min,
            self.k_region_map,
            regions_override,
            self.k_grid,
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
        mil_outputs = [(s.detach(), d) for s, d in outputs] if self.detach_region_maps else list(outputs)
        if self.variant == "paper":
            bags = regions_override if regions_override is not None else [s for s, _ in mil_outputs]
            l_ra = region_mil_loss(
                self.region_predictions(mil_outputs, regions_override),
                region_labels,
                self.pos_weight,
                cell_mask,
                [occupied_regions(s, self.min_region_sum) for s in bags] if self.min_region_sum > 0 else None,
            )
            scan_preds = scan_predictions(mil_outputs)
            l_sa = scan_mil_loss(
                scan_preds[-1:] if self.scan_loss_scales == "finest" else scan_preds, scan_labels
            )
        else:
            l_ra = released_region_mil_loss(
                mil_outputs,
                region_labels,
                self.pos_weight,
                self.threshold,
                self.k_grid,
                self.k_scale,
                self.k_min,
                self.min_region_sum,
            )
            l_sa = released_scan_mil_loss(
                mil_outputs, scan_labels, self.scan_pos_weight, self.scan_loss_scales
            )
        scan_keep = keep if self.mask_scan_loss_for_unclear else torch.ones_like(keep)
        zero = torch.zeros_like(l_ra)
        l_s = zero
        if region_map is not None:
            l_s = segmentation_loss(
                [s for s, _ in outputs],
                region_map,
                self.dice_smooth,
                self.coarse_target,
                RELEASED_EMPTY_SUM if self.variant == "released_code" else None,
            )
        l_ra, l_sa = l_ra * keep, l_sa * scan_keep
        total = seg_weight * l_s + self.region_weight * l_ra + self.alpha * l_sa
        return {
            "loss": total.mean(),
            "segmentation": l_s.mean(),
            "region_mil": l_ra.mean(),
            "scan_mil": l_sa.mean(),
        }
