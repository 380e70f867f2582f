"""What every text model of reportsup shares: a :class:`TextEncoder`, partial optimizer/scheduler from
config, and a label manifest saved in and checked against every checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics.classification import BinaryAUROC

from lightning_modules.common.checkpoints import load_checkpoint
from lightning_modules.common.decision_thresholds import ValidationThresholds
from lightning_modules.common.encoders import TextEncoder
from lightning_modules.common.label_manifest import build_manifest, check_manifest, chosen_thresholds


class LabelClassifier(ValidationThresholds, pl.LightningModule):
    """What reportsup's classifiers share, text or image: labels in output order, a partial optimizer and
    scheduler from config, a decision threshold, and the train/validation steps around the model's own
    :meth:`compute_loss` (logging ``train/loss`` and ``val/loss``, the checkpoint criterion).

    ``threshold``: a number (the papers' 0.5), or ``"validation"`` (issue 22 item 3): after every
    validation epoch each label's threshold is chosen on the validation outputs with
    ``threshold_rule`` (``youden``, or ``sensitivity`` / ``specificity`` reaching ``threshold_target``)
    and kept in :attr:`label_thresholds`, so the checkpoint of an epoch carries the thresholds chosen on
    that epoch's own outputs in its label manifest. :attr:`threshold` stays 0.5 then: the metrics at
    0.5 are still reported, next to those at the chosen thresholds.
    """

    def __init__(
        self,
        labels: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        threshold: float | str = 0.5,
        threshold_rule: str = "youden",
        threshold_target: float = 0.9,
    ) -> None:
        super().__init__()
        self.labels = list(labels)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.threshold = self.init_decision_threshold(threshold, threshold_rule, threshold_target)

    # -- steps shared by the classifiers --------------------------------------------------------
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` of a batch; each model defines its paper's loss."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self.compute_loss(batch)
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=len(batch["index"]),
        )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self.compute_loss(batch)
        self.log(
            "val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(batch["index"])
        )
        self.update_validation_metrics(batch, logits)
        self.keep_validation_outputs(torch.sigmoid(logits.float()), batch["targets"])

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def on_validation_epoch_end(self) -> None:
        """With ``threshold=validation``: each label's threshold chosen on this epoch's validation outputs."""
        self.choose_validation_thresholds(self.labels)

    def update_validation_metrics(self, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> None:
        """Hook for validation metrics beyond the loss (none by default)."""

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer), "interval": "epoch"},
        }


class ReportModel(LabelClassifier):
    """Base class of the text models: a :class:`TextEncoder` and a label manifest saved in and checked
    against every checkpoint. Subclasses set :attr:`TASK`, :attr:`REBUILD_KWARGS` and call ``super().__init__``."""

    TASK: ClassVar[str] = "report_model"
    #: constructor arguments that :meth:`from_checkpoint` restores from the manifest's ``model_hparams``
    REBUILD_KWARGS: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        encoder: TextEncoder,
        labels: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        threshold: float | str = 0.5,
        threshold_rule: str = "youden",
        threshold_target: float = 0.9,
    ) -> None:
        super().__init__(labels, optimizer, scheduler, threshold, threshold_rule, threshold_target)
        self.encoder = encoder

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"])
        return {"index": batch["index"], "probs": torch.sigmoid(logits.float()), "targets": batch["targets"]}

    # -- label manifest ----------------------------------------------------------------------
    def manifest_extra(self) -> dict[str, Any]:
        """Task-specific manifest entries (e.g. the Cross-DL label space); subclasses extend."""
        return {"model_hparams": {k: self.hparams[k] for k in self.REBUILD_KWARGS if k in self.hparams}}

    def label_manifest(self) -> dict[str, Any]:
        return build_manifest(
            self.TASK,
            self.labels,
            self.encoder.manifest(),
            self.threshold,
            extra=self.manifest_extra(),
            thresholds=self.label_thresholds,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["label_manifest"] = self.label_manifest()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_manifest(checkpoint.get("label_manifest"), self.label_manifest())
        # the thresholds chosen on validation for these weights (testing reports the metrics at them)
        self.label_thresholds = chosen_thresholds(checkpoint.get("label_manifest"))

    @classmethod
    def rebuild_kwargs(cls, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments (besides encoder and optimizer) recovered from a manifest."""
        return {"labels": manifest["labels"], **manifest.get("model_hparams", {})}

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        map_location: str | torch.device = "cpu",
        trust_checkpoint: bool = False,
    ) -> ReportModel:
        """Rebuild a trained model from its checkpoint alone (no hub download): encoder architecture and
        tokenizer from the label manifest, weights from the state dict. Read with
        ``torch.load(weights_only=True)`` (:func:`~lightning_modules.common.checkpoints.load_checkpoint`);
        ``trust_checkpoint=True`` allows unpickling a trusted file that needs it."""
        checkpoint = load_checkpoint(path, map_location, trust_checkpoint=trust_checkpoint)
        return cls.from_state(checkpoint.get("label_manifest"), checkpoint["state_dict"], where=str(path))

    @classmethod
    def from_state(
        cls, manifest: Mapping[str, Any] | None, state_dict: Mapping[str, torch.Tensor], where: str
    ) -> ReportModel:
        """A model in eval mode from a label manifest (with the encoder's ``files``) and a state dict: what
        a checkpoint and an exported folder (``reportsup-export``) both provide. ``where`` names the source
        in errors."""
        check_manifest(manifest, manifest or {}, where=where)
        if manifest["task"] != cls.TASK:
            check_manifest(manifest, {**manifest, "task": cls.TASK}, where=where)
        model = cls(
            encoder=TextEncoder.from_manifest(manifest["encoder"]),
            optimizer=torch.optim.Adam,
            **cls.rebuild_kwargs(manifest),
        )
        model.on_load_checkpoint({"label_manifest": manifest})
        model.load_state_dict(state_dict)
        # the reportsup version that trained it (label_manifest() would say the running one): exports keep it
        model.trained_with_version = manifest.get("framework_version")
        return model.eval()


class ValidationAUROC:
    """Mixin for report classifiers: per-label validation AUROC on the known targets, logged as
    ``val/<label>/auroc`` (several labels) and their mean ``val/auroc``. Call :meth:`init_validation_auroc`
    in ``__init__`` after ``self.labels`` is set."""

    def init_validation_auroc(self) -> None:
        self.val_auroc = nn.ModuleList([BinaryAUROC() for _ in self.labels])

    def update_validation_metrics(self, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> None:
        probs = torch.sigmoid(logits.float())
        for j, metric in enumerate(self.val_auroc):
            known = ~torch.isnan(batch["targets"][:, j])
            if known.any():
                metric.update(probs[known, j], batch["targets"][known, j].long())

    def on_validation_epoch_end(self) -> None:
        values = []
        for label, metric in zip(self.labels, self.val_auroc, strict=True):
            if metric.update_count:
                value = metric.compute()
                values.append(value)
                if len(self.labels) > 1:
                    self.log(f"val/{label}/auroc", value, sync_dist=True)
            metric.reset()
        if values:
            # already synchronised by torchmetrics; sync_dist only silences Lightning's DDP warning
            self.log("val/auroc", torch.stack(values).mean(), prog_bar=True, sync_dist=True)
        super().on_validation_epoch_end()  # LabelClassifier: thresholds chosen on validation
