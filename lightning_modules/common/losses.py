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


def balanced_class_weights(targets: torch.Tensor) -> torch.Tensor:
    """``(2, n_labels)`` weights of the negative and positive class per label, "balanced" as
    scikit-learn's ``compute_class_weight``: ``n_known / (2 * n_class)`` from the known (non-NaN)
    targets. A class absent from ``targets`` gets weight 0 (it cannot occur in the loss anyway)."""
    known = ~torch.isnan(targets)
    pos = ((targets == 1) & known).sum(0).float()
    neg = ((targets == 0) & known).sum(0).float()
    n = known.sum(0).float()
    return torch.stack(
        [torch.where(c > 0, n / (2 * c.clamp(min=1)), torch.zeros_like(n)) for c in (neg, pos)]
    )


def class_weighted_bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy with a weight per class and label (``(2, n_labels)``: negative, positive),
    normalised by the sum of the weights of the known entries, as ``torch.nn.CrossEntropyLoss(weight=...)``
    averages: for one label this equals the weighted two-class softmax loss of a BERT sequence classifier
    (the spine study's Simple Transformers models with class balancing). NaN targets are left out."""
    known = ~torch.isnan(targets)
    safe = torch.where(known, targets, torch.zeros_like(targets))
    w = torch.where(safe > 0.5, class_weights[1], class_weights[0]) * known
    loss = F.binary_cross_entropy_with_logits(logits, safe, reduction="none") * w
    return loss.sum() / w.sum().clamp(min=1e-12)
