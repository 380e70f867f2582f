"""Losses shared by the report classifiers."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy over known targets only: NaN targets (unknown labels) contribute nothing.

    Averaged over the known entries of the batch; a batch with no known entry gives 0 with a gradient
    path, so the step still runs (all-unknown batches are possible with multi-label tables).
    """
    known = ~torch.isnan(targets)
    safe = torch.where(known, targets, torch.zeros_like(targets))
    loss = F.binary_cross_entropy_with_logits(logits, safe, reduction="none", pos_weight=pos_weight)
    loss = loss * known
    return loss.sum() / known.sum().clamp(min=1)
