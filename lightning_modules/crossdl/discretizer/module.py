"""Cross-DL discretizer (Liu et al. 2023, STAR Methods "Discretizer model and training").

A BERT encoder reads one Findings sentence; the feature at ``[CLS]`` goes through one fully connected
layer and a sigmoid to give r in [0,1]^{N+2} (is each region abnormal in this sentence) and
t in [0,1]^M (which abnormality types the sentence describes). Loss: BCE(r) + BCE(t). Paper
settings: Chinese BERT-base, max length 128, Adam lr 5e-5, batch 16, early stopping with patience 1
on validation loss, at most 5 epochs, the checkpoint with the lowest validation loss. Report matrices
are merged from sentence predictions by :func:`reportsup.contracts.labels.crossdl.report_matrices`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from lightning_modules.common.encoders import TextEncoder
from lightning_modules.common.losses import masked_bce_with_logits
from lightning_modules.common.report_model import ReportModel
from reportsup.contracts.labels.crossdl import LabelSpace


class DiscretizerModule(ReportModel):
    """Sentence -> region probabilities (first ``len(regions)`` outputs) and type probabilities (the rest)."""

    TASK = "crossdl_discretizer"
    REBUILD_KWARGS = ("dropout", "threshold", "sentence_splitting")

    def __init__(
        self,
        encoder: TextEncoder,
        optimizer: Callable[..., torch.optim.Optimizer],
        label_space: Mapping[str, Any] | None = None,
        scheduler: Callable[..., Any] | None = None,
        dropout: float = 0.1,
        threshold: float | str = 0.5,
        threshold_rule: str = "youden",
        threshold_target: float = 0.9,
        sentence_splitting: Mapping[str, Any] | None = None,
    ) -> None:
        """``sentence_splitting`` (language, findings_headers, end_headers) travels in the label manifest,
        so that ``reportsup-discretize`` splits new reports exactly as the training reports were split."""
        self.space = LabelSpace.from_config(**dict(label_space or {}))
        super().__init__(
            encoder,
            [*self.space.regions, *self.space.types],
            optimizer,
            scheduler,
            threshold,
            threshold_rule,
            threshold_target,
        )
        self.save_hyperparameters(ignore=["encoder", "optimizer", "scheduler"])
        self.n_regions = len(self.space.regions)
        # dropout on [CLS] as in BERT's own classification heads (the paper names only the FC layer)
        self.output_layer = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(encoder.hidden_size, len(self.labels))
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        cls = self.encoder(input_ids, attention_mask)[:, 0]
        return self.output_layer(cls)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """BCE(regions) + BCE(types), each averaged over the known entries (paper's L = CE(r) + CE(t))."""
        logits = self(batch["input_ids"], batch["attention_mask"]).float()
        y, n = batch["targets"], self.n_regions
        loss = masked_bce_with_logits(logits[:, :n], y[:, :n]) + masked_bce_with_logits(
            logits[:, n:], y[:, n:]
        )
        return loss, logits

    def predict_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        return self.test_step(batch, batch_idx, dataloader_idx)

    def manifest_extra(self) -> dict[str, Any]:
        space = {
            "regions": list(self.space.regions),
            "types": list(self.space.types),
            "side_pairs": dict(self.space.side_pairs),
            "other": self.space.other,
            "unclear": self.space.unclear,
        }
        return {**super().manifest_extra(), "label_space": space}

    @classmethod
    def rebuild_kwargs(cls, manifest: Mapping[str, Any]) -> dict[str, Any]:
        return {"label_space": manifest["label_space"], **manifest.get("model_hparams", {})}
