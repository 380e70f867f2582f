"""ALARM report classifier (Wood et al. 2021, Eur Radiol, "Modelling", Fig. 2).

Transformer encoder (BioBERT in the paper) -> attention pooling over token vectors (padding masked)
-> fully connected network with one hidden layer -> one logit per label. Trained end-to-end with
binary cross-entropy and Adam, lr 1e-5, batch 16; the checkpoint with the lowest validation loss is
evaluated.

The paper trains 8 separate binary models (``abnormal`` and one per granular category), each on its
own data set with its own image-label hold-out: that is one label per run (``alarm_binary``,
``alarm_granular``). Several labels in one run give one multi-label model with a shared encoder, an
option beyond the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from lightning_modules.common.encoders import TextEncoder
from lightning_modules.common.losses import masked_bce_with_logits
from lightning_modules.common.pooling import AttentionPooling
from lightning_modules.common.report_model import ReportModel, ValidationAUROC


class ALARMClassifier(ValidationAUROC, ReportModel):
    """Report -> one probability per label in ``labels``.

    Args:
        encoder: the :class:`~lightning_modules.common.encoders.TextEncoder` (fine-tuned end to end).
        labels: label names, in output order.
        mlp_hidden_size: width of the single hidden layer (the paper does not give it).
        attention_size: width of the attention projection.
        dropout: dropout before and inside the classification network.
        optimizer: ``functools.partial`` of a torch optimizer (paper: Adam, lr 1e-5).
        scheduler: optional partial of an LR scheduler (the paper uses none).
        threshold: decision threshold stored in the label manifest (metrics at 0.5 in the paper).
    """

    TASK = "alarm_report_classifier"
    REBUILD_KWARGS = ("mlp_hidden_size", "attention_size", "dropout", "threshold")

    def __init__(
        self,
        encoder: TextEncoder,
        labels: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        mlp_hidden_size: int = 256,
        attention_size: int = 128,
        dropout: float = 0.1,
        threshold: float | str = 0.5,
        threshold_rule: str = "youden",
        threshold_target: float = 0.9,
    ) -> None:
        super().__init__(encoder, labels, optimizer, scheduler, threshold, threshold_rule, threshold_target)
        self.save_hyperparameters(ignore=["encoder", "optimizer", "scheduler"])
        self.pooling = AttentionPooling(encoder.hidden_size, attention_size)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(encoder.hidden_size, mlp_hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_hidden_size, len(self.labels)),
        )
        self.init_validation_auroc()

    # -- model --------------------------------------------------------------------------------
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, n_labels)``; with ``return_attention`` also the pooling weights ``(B, T)``."""
        pooled, weights = self.represent(input_ids, attention_mask)
        logits = self.classifier(pooled)
        return (logits, weights) if return_attention else logits

    def represent(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The report representation ``(B, H)`` (the attention-pooled vector that Wood et al. Fig. 4
        maps with t-SNE) and the pooling weights ``(B, T)`` (Fig. 5)."""
        return self.pooling(self.encoder(input_ids, attention_mask), attention_mask)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"])
        return masked_bce_with_logits(logits.float(), batch["targets"]), logits

    def predict_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        logits, weights = self(batch["input_ids"], batch["attention_mask"], return_attention=True)
        return {
            "index": batch["index"],
            "probs": torch.sigmoid(logits.float()),
            "attention": weights,
            "input_ids": batch["input_ids"],
        }
