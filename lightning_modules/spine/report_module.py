"""Spine report NLP: a BERT sequence classifier per radiological finding (spine study, "Extracting
Structured Information From Radiological Reports").

The paper trains one Simple Transformers ``ClassificationModel`` per finding from
``dbmdz/bert-base-italian-uncased``: the [CLS] vector through BERT's pooler (dense + tanh), dropout and a
linear layer, cross-entropy with class weights balancing the unbalanced training set, reports
lower-cased with line terminators replaced by spaces, at most 20 epochs. Here a binary finding has one
logit (the class-weighted two-class softmax and the class-weighted sigmoid are the same loss); several
findings in one run give one multi-head model with a shared encoder (an option beyond the paper).

Simple Transformers' defaults stand where the paper gives no value: AdamW, lr 4e-5, linear decay after
a warm-up of 6 % of the steps, dropout 0.1 (BERT's). Deviation: our pooler is initialised afresh
(reportsup's encoders drop the pretrained pooler, which the other models never use).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from lightning_modules.common.encoders import TextEncoder
from lightning_modules.common.losses import balanced_class_weights, class_weighted_bce_with_logits
from lightning_modules.common.pooling import AttentionPooling
from lightning_modules.common.report_model import ReportModel, ValidationAUROC


class SpineReportClassifier(ValidationAUROC, ReportModel):
    """Report -> one probability per finding in ``labels``.

    Args:
        encoder: the :class:`~lightning_modules.common.encoders.TextEncoder` (paper: bert-base-italian-uncased).
        labels: findings, in output order (one in the paper's per-finding models).
        optimizer: partial of a torch optimizer (Simple Transformers: AdamW, lr 4e-5).
        warmup_ratio: share of the training steps with a linear warm-up, then linear decay to 0.
        class_weighting: ``balanced`` (paper: "automatic weight balancing") or ``none``.
        dropout: before the classification layer (BERT's hidden dropout).
        threshold: decision threshold (0.5: the argmax of the two-class softmax).
        pooling: ``cls`` (the paper's BERT sequence classifier: [CLS] through dense + tanh) or
            ``attention`` (ALARM's attention pooling over the tokens; the demo's from-scratch tiny BERT
            learns it in a few epochs, the [CLS] vector only in many).
    """

    TASK = "spine_report_classifier"
    REBUILD_KWARGS = ("dropout", "threshold", "class_weighting", "pooling")

    def __init__(
        self,
        encoder: TextEncoder,
        labels: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        warmup_ratio: float = 0.06,
        class_weighting: str = "balanced",
        dropout: float = 0.1,
        threshold: float | str = 0.5,
        threshold_rule: str = "youden",
        threshold_target: float = 0.9,
        pooling: str = "cls",
    ) -> None:
        super().__init__(encoder, labels, optimizer, scheduler, threshold, threshold_rule, threshold_target)
        if class_weighting not in ("balanced", "none"):
            raise ValueError(f"model.class_weighting={class_weighting!r}: choose balanced or none.")
        if pooling not in ("cls", "attention"):
            raise ValueError(f"model.pooling={pooling!r}: choose cls (the paper) or attention.")
        self.save_hyperparameters(ignore=["encoder", "optimizer", "scheduler"])
        hidden = encoder.hidden_size
        if pooling == "cls":
            self.pooler = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())  # BERT's [CLS] pooler
        else:
            self.attention = AttentionPooling(hidden)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, len(self.labels)))
        # (negative, positive) weight per finding; set from the training split at fit start and saved in
        # the checkpoint, so a resumed run and the manifest know what the model was trained with.
        self.register_buffer("class_weights", torch.ones(2, len(self.labels)))
        self.init_validation_auroc()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_findings)`` from the [CLS] token (or the attention-pooled tokens)."""
        tokens = self.encoder(input_ids, attention_mask)
        if self.hparams.pooling == "attention":
            return self.classifier(self.attention(tokens, attention_mask)[0])
        return self.classifier(self.pooler(tokens[:, 0]))

    def on_fit_start(self) -> None:
        if self.hparams.class_weighting == "balanced" and self.trainer.datamodule is not None:
            train_targets = self.trainer.datamodule.datasets["train"].targets
            self.class_weights.copy_(balanced_class_weights(train_targets).to(self.class_weights))

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"])
        return class_weighted_bce_with_logits(logits.float(), batch["targets"], self.class_weights), logits

    def configure_optimizers(self) -> Any:
        if self.scheduler_factory is not None:
            return super().configure_optimizers()
        optimizer = self.optimizer_factory(params=self.parameters())
        steps = int(self.trainer.estimated_stepping_batches)
        schedule = get_linear_schedule_with_warmup(optimizer, int(self.hparams.warmup_ratio * steps), steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {"class_weights": self.class_weights.tolist()}
