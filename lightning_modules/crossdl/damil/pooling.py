"""Dynamic MIL pooling of the DaMIL analyzer (Liu et al. 2023, "Image analyzer architecture and
training"): bags are anatomical regions, instances are voxels, and a voxel's probability of being an
instance of region R_i showing abnormality A_j is the product S_iv * D_jv of the predicted maps.

* first (coarsest) scale: max pooling, ``y_ij = max_v S_iv D_jv``;
* scale l > 1: ``y_lij = mean(top-k_lij(S_i * D_j^l))`` with
  ``k_lij = count_v(S_iv * D_jv^(l-1) > t)`` from the previous scale.

Choices where the paper is silent (each a parameter):

* which region map counts k: the previous scale's S (``k_region_map="previous"``, default: S and
  D^(l-1) then live on the same grid) or the current S max-pooled to the previous grid ("current");
* k is counted on the coarser grid while top-k is taken on the finer one (8x more voxels in 3D):
  ``k_grid="coarse"`` (default) uses the count as the paper's formula writes it; ``k_grid="fine"``
  multiplies it by the voxels per coarse voxel (8), so the top-k covers the same volume; ``k_scale``
  multiplies after that and ``k_min`` floors the result. The released code's ``max(8c, 8) / 2 =
  max(4c, 4)`` is ``k_grid="fine", k_scale=0.5, k_min=4``;
* k = 0 (nothing above t at the previous scale): ``k_min=1`` (default) makes it top-1, i.e. max
  pooling, so negative bags still get a prediction to push down.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def instance_products(s: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(B, N, M, V): S_iv * D_jv for every region i, type j and voxel v."""
    b, n = s.shape[:2]
    m = d.shape[1]
    return s.reshape(b, n, 1, -1) * d.reshape(b, 1, m, -1)


def max_mil_pooling(s: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(B, N, M) = max_v S_iv D_jv (the first scale)."""
    return instance_products(s, d).amax(dim=-1)


@torch.no_grad()
def topk_counts(
    s_prev: torch.Tensor,
    d_prev: torch.Tensor,
    threshold: float,
    k_scale: float = 1.0,
    k_min: int = 1,
    k_max: int | None = None,
) -> torch.Tensor:
    """(B, N, M) integer k = clamp(k_scale * count_v(S_iv D_jv > t), k_min, k_max); no gradient."""
    count = (instance_products(s_prev, d_prev) > threshold).sum(dim=-1).float()
    k = torch.clamp(torch.round(count * k_scale), min=k_min)
    if k_max is not None:
        k = torch.clamp(k, max=k_max)
    return k.long()


def k_factor(
    k_grid: str, k_scale: float, fine_shape: tuple[int, ...], coarse_shape: tuple[int, ...]
) -> float:
    """What the count on the coarse grid is multiplied by: ``k_scale``, times the fine voxels per coarse
    voxel when ``k_grid="fine"``."""
    if k_grid == "coarse":
        return k_scale
    if k_grid == "fine":
        return k_scale * math.prod(fine_shape) / math.prod(coarse_shape)
    raise ValueError(f"k_grid must be 'coarse' or 'fine', got {k_grid!r}")


#: regions per block when the top-k voxels are selected: the (B, block, M, V) products of a few regions
#: at a time stay in the CPU's caches, where the whole (B, N, M, V) tensor (70 MB at 80 x 80 x 40) does
#: not; the selected voxels are the same (``benchmarks/damil_overhead.py``: ~2x faster selection)
SELECT_BLOCK = 4


@torch.no_grad()
def topk_voxels(s: torch.Tensor, d: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, M, k) indices of the k voxels with the largest S_iv D_jv per bag, largest first
    (``torch.topk`` of the products, a few regions at a time); no gradient."""
    return torch.cat(
        [
            torch.topk(instance_products(s[:, i : i + SELECT_BLOCK], d), k, dim=-1).indices
            for i in range(0, s.shape[1], SELECT_BLOCK)
        ],
        dim=1,
    )


def products_at(s: torch.Tensor, d: torch.Tensor, voxels: torch.Tensor) -> torch.Tensor:
    """(B, N, M, K) S_iv D_jv at the voxels ``voxels`` (B, N, M, K), with their gradient.

    The same values as indexing :func:`instance_products` (the same fp32 products), but the gradient
    reaches S and D through the K gathered voxels only, instead of through a (B, N, M, V) scatter and
    a product the size of all voxels of every bag in the backward pass."""
    b, n, m, kk = voxels.shape
    s_top = s.reshape(b, n, -1).gather(-1, voxels.reshape(b, n, m * kk)).reshape(b, n, m, kk)
    d_index = voxels.transpose(1, 2).reshape(b, m, n * kk)
    d_top = d.reshape(b, m, -1).gather(-1, d_index).reshape(b, m, n, kk).transpose(1, 2)
    return s_top * d_top


def topk_products(s: torch.Tensor, d: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, M, k) the k largest S_iv D_jv per bag, largest first (``torch.topk(instance_products(s, d),
    k).values`` with the same gradient, computed without the (B, N, M, V) tensor in the backward pass)."""
    return products_at(s, d, topk_voxels(s, d, k))


def topk_mil_pooling(s: torch.Tensor, d: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, N, M) = mean of the k_ij largest S_iv D_jv (k per bag; k >= 1)."""
    n_vox = s[0, 0].numel()
    k = k.clamp(1, n_vox)
    top = topk_products(s, d, int(k.max()))  # sorted, largest first
    ranks = torch.arange(top.shape[-1], device=top.device)
    keep = (ranks < k.unsqueeze(-1)).to(top.dtype)
    return (top * keep).sum(-1) / k.to(top.dtype)


def previous_grid_regions(s: torch.Tensor, s_prev: torch.Tensor) -> torch.Tensor:
    """The current region map max-pooled onto the previous (coarser) grid (``k_region_map="current"``)."""
    factor = [a // b for a, b in zip(s.shape[2:], s_prev.shape[2:], strict=True)]
    return F.max_pool3d(s, kernel_size=factor, stride=factor)


def multiscale_region_predictions(
    outputs: list[tuple[torch.Tensor, torch.Tensor]],
    threshold: float = 0.5,
    k_scale: float = 1.0,
    k_min: int = 1,
    k_region_map: str = "previous",
    regions_override: list[torch.Tensor] | None = None,
    k_grid: str = "coarse",
) -> list[torch.Tensor]:
    """Region-level predictions (B, N, M) at every scale, coarse to fine (paper's DaMIL pooling).

    ``regions_override`` replaces the predicted S per scale (static MIL with the atlas segmentation,
    ablations C and D).
    """
    preds = []
    for level, (s, d) in enumerate(outputs):
        s_bag = regions_override[level] if regions_override is not None else s
        if level == 0:
            preds.append(max_mil_pooling(s_bag, d))
            continue
        s_prev, d_prev = outputs[level - 1]
        if regions_override is not None:
            s_prev = regions_override[level - 1]
        elif k_region_map == "current":
            s_prev = previous_grid_regions(s, s_prev)
        elif k_region_map != "previous":
            raise ValueError(f"k_region_map must be 'previous' or 'current', got {k_region_map!r}")
        factor = k_factor(k_grid, k_scale, tuple(d.shape[2:]), tuple(d_prev.shape[2:]))
        k = topk_counts(s_prev, d_prev, threshold, factor, k_min)
        preds.append(topk_mil_pooling(s_bag, d, k))
    return preds


def scan_predictions(outputs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Scan-level prediction per scale (B, M): the maximum of each abnormality map (paper, "Scan-level
    abnormality prediction could also be acquired using global max pooling"); the finest scale's is the
    model's ("The prediction of the highest scale is used as the final prediction")."""
    return [d.flatten(2).amax(dim=-1) for _, d in outputs]
