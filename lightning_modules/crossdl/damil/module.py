"""DaMIL image analyzer as a LightningModule (Liu et al. 2023, "Image analyzer architecture and
training", "Ablation study").

Training as the paper: Adam lr 5e-4 halved every epoch from the 3rd (:mod:`damil_schedules`), batch 1,
``lambda * L_s + L_ra + alpha * L_sa`` with lambda 1 -> 0.01 halving per epoch and alpha 0.1
(:mod:`damil_losses`), best checkpoint by the validation region-level MIL loss (``val/region_mil``),
early stopping patience 3 (callbacks config). ``variant: released_code`` switches the losses, the
network's abnormality activation and the schedule to the released Keras code's choices: every option
of :mod:`~lightning_modules.crossdl.damil.variants` that holds the paper's value takes the released
code's (logged once; the resolved values are what ``hparams`` records).

Ablations (Table S2) as options: ``mil_mode: static`` (C: bags from the atlas coarse segmentation
instead of the predicted one), ``inference_regions: atlas`` (D: DaMIL-trained, atlas segmentation at
inference), ``supervision: scan`` (scan-level labels only), ``single_region`` (train the MIL loss of one
region only), and the network's ``n_scales: 1`` (single scale).

``test_step`` returns, per scan, the region x type probabilities of the final (finest) scale, the
scan-level probabilities (max of each abnormality map), the region-restricted maxima ``max_v S_iv D_jv``
of the finest maps (CQ500's left/right scores, Figure 6), the labels, and the Dice of the thresholded
abnormality maps against voxel masks (MONAI), for :class:`~lightning_modules.crossdl.damil.evaluation.DaMILEvaluator`.

:meth:`DaMILModule.from_checkpoint` rebuilds a trained analyzer from its checkpoint alone (its own
hyper-parameters), for test-only runs of another experiment (``experiment=damil_cq500``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from lightning_modules.common.checkpoints import load_checkpoint
from lightning_modules.common.decision_thresholds import ValidationThresholds
from lightning_modules.common.label_manifest import (
    CheckpointManifestError,
    build_manifest,
    chosen_thresholds,
)
from lightning_modules.common.monai_batches import plain_tensors
from lightning_modules.crossdl.damil.dice_threshold import (
    FROM_VALIDATION,
    check_dice_threshold,
    fixed_thresholds,
    localisation_dice,
    validation_thresholds,
    voxel_histograms,
)
from lightning_modules.crossdl.damil.losses import DaMILLoss, downsample_labels, region_one_hot
from lightning_modules.crossdl.damil.network import DaMILNet
from lightning_modules.crossdl.damil.pooling import max_mil_pooling, scan_predictions
from lightning_modules.crossdl.damil.schedules import halving_scheduler, segmentation_weight
from lightning_modules.crossdl.damil.variants import resolve
from reportsup.contracts.labels.crossdl import LabelSpace

log = logging.getLogger(__name__)

#: the label manifest's task of a DaMIL checkpoint (reportsup.api.API_CLASSES dispatches on it)
DAMIL_TASK = "damil"


def prediction_columns(space: LabelSpace) -> list[str]:
    """The analyzer's outputs in the order ``reportsup-damil-predict`` writes them: ``scan__<type>`` (the
    maximum of each abnormality map), then ``<region>__<type>`` for the anatomical regions (row-major)."""
    return [f"scan__{t}" for t in space.types] + [
        f"{r}__{t}" for r in space.anatomical_regions for t in space.types
    ]


def check_top_k_threshold(value: Any) -> None:
    """``model.threshold`` is DaMIL's *t* of ``k = count(S_i * D_j > t)``: a number. ``validation`` there
    is a mix-up with the other components' decision threshold, named with its key."""
    try:
        float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"model.threshold={value!r}: for DaMIL this is t of the top-k count k = count(S_i * D_j > t) "
            "(paper: 'Dynamic multi-scale MIL'; released code 0.5), a number. Decision thresholds chosen on "
            "the validation scans are model.decision_threshold=validation."
        ) from None


def test_outputs(
    batch: Mapping[str, Any], pred: Mapping[str, torch.Tensor], dice_thresholds: torch.Tensor
) -> dict:
    """What :class:`~lightning_modules.crossdl.damil.evaluation.DaMILEvaluator` collects per scan, plus the maps
    for :class:`~lightning_modules.crossdl.damil.outputs.DaMILMapWriter` ("_" keys are not collected: memory)."""
    b = len(batch["image"])
    out = {
        "index": batch["index"],
        "probs": torch.cat([pred["region_probs"].reshape(b, -1), pred["scan_probs"]], 1).float(),
        "targets": torch.cat([batch["region_labels"].reshape(b, -1), batch["scan_labels"]], 1).float(),
        "unclear": batch["unclear"].float(),
        "dice": localisation_dice(batch, pred["abnormality"], dice_thresholds),
        "_abnormality": pred["abnormality"],
        "_regions": pred["regions"],
    }
    if "region_max" in pred:  # DaMIL's region-restricted maxima (the ablation classifiers have none)
        out["region_max"] = pred["region_max"].reshape(b, -1).float()
    if "voxel_mask" in batch and "region_mask" in batch:  # the voxel-level ROC (calibration of the maps)
        out["voxel_hist"] = voxel_histograms(batch, pred["abnormality"]).reshape(b, -1)
    return out


def validation_targets(batch: Mapping[str, Any], n_regions: int, n_types: int) -> torch.Tensor:
    """(B, columns) targets in :func:`prediction_columns` order: the scan labels, then the region x type
    cells, unknown (NaN) for the cells of unclear scans (the evaluator leaves those cells out too)."""
    b = len(batch["scan_labels"])
    cells = batch["region_labels"].float().reshape(b, n_regions * n_types).clone()
    cells[batch["unclear"].bool().reshape(b)] = float("nan")
    return torch.cat([batch["scan_labels"].float().reshape(b, n_types), cells], 1)


def prediction_vector(region_probs: torch.Tensor, scan_probs: torch.Tensor) -> torch.Tensor:
    """(B, columns) probabilities in :func:`prediction_columns` order."""
    b = len(scan_probs)
    return torch.cat([scan_probs.float().reshape(b, -1), region_probs.float().reshape(b, -1)], 1)


class ScanModelSteps(ValidationThresholds):
    """Logging, test step, decision thresholds and the paper's optimizer shared by :class:`DaMILModule`
    and the ablation classifiers (:mod:`lightning_modules.crossdl.damil.ablations`); the host defines
    ``space`` (its label space) and ``predict_scan`` and calls :meth:`init_decision_threshold` with ``model.decision_threshold``.

    Decision thresholds (issue 22 item 3): the papers binarise at 0.5. With
    ``model.decision_threshold=validation`` each output column (``scan__<type>`` and every
    ``<region>__<type>`` cell) gets its threshold chosen on the validation scans after every validation
    epoch (:mod:`lightning_modules.common.decision_thresholds`); the checkpoint's label manifest
    carries them, the test reports the scan-level metrics at them (``<set>@val_threshold``) and
    ``reportsup-damil-predict`` / :class:`reportsup.api.ScanAnalyzer` apply them
    (``scan__<type>_positive``). ``model.threshold`` is not this: it is the paper's *t* of the top-k
    count ``k = count(S_i * D_j > t)``."""

    #: the label manifest's task (the ablation classifiers have their own: the API loads DaMIL's only)
    TASK = DAMIL_TASK
    #: the fixed decision threshold (``model.decision_threshold``; 0.5 with ``validation``)
    decision_threshold: float = 0.5

    def label_manifest(self) -> dict[str, Any]:
        """What the outputs mean, with the decision thresholds (chosen on validation, when they were)."""
        return build_manifest(
            self.TASK,
            prediction_columns(self.space),
            {},
            self.decision_threshold,
            thresholds=self.label_thresholds,
        )

    def keep_scan_validation_outputs(
        self, batch: Mapping[str, Any], region_probs: torch.Tensor, scan_probs: torch.Tensor
    ) -> None:
        if self.choose_on_validation:
            self.keep_validation_outputs(
                prediction_vector(region_probs, scan_probs),
                validation_targets(batch, self.n_regions, self.n_types),
            )

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def on_validation_epoch_end(self) -> None:
        if self.choose_on_validation:
            self.choose_validation_thresholds(prediction_columns(self.space))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What the outputs mean (plain values: the checkpoint loads with torch.load(weights_only=True)).
        checkpoint["label_manifest"] = self.label_manifest()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the thresholds chosen on validation for these weights (testing reports the metrics at them)
        self.label_thresholds = chosen_thresholds(checkpoint.get("label_manifest"))

    def log_losses(
        self, stage: str, losses: Mapping[str, torch.Tensor], n: int, sync_dist: bool = True
    ) -> None:
        for key, value in losses.items():
            self.log(
                f"{stage}/{key}",
                value,
                on_step=stage == "train" and key == "loss",
                on_epoch=True,
                prog_bar=stage == "val" and key == "region_mil",
                batch_size=n,
                sync_dist=sync_dist,
            )

    def on_test_start(self) -> None:
        """Fix the Dice thresholds for this test run (:mod:`~lightning_modules.crossdl.damil.dice_threshold`):
        the configured number, or per type the best on the validation scans with the tested weights."""
        chosen = self.hparams.dice_threshold
        if chosen == FROM_VALIDATION:
            self.dice_thresholds = validation_thresholds(self, self.trainer)
        else:
            self.dice_thresholds = fixed_thresholds(chosen, self.n_types)

    def test_step(
        self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        batch = plain_tensors(batch)
        thresholds = self.dice_thresholds.tensor(self.device)
        return test_outputs(batch, self.predict_scan(batch), thresholds)

    def halving_adam(self) -> dict[str, Any]:
        """Adam, lr halved every epoch from ``lr_halving_start_epoch`` (paper)."""
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        schedule = halving_scheduler(
            optimizer, self.hparams.lr_halving_start_epoch, self.hparams.halve_in_start_epoch
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}


class DaMILModule(ScanModelSteps, pl.LightningModule):
    def __init__(
        self,
        label_space: Mapping[str, Any] | None = None,
        network: Mapping[str, Any] | None = None,
        variant: str = "paper",
        lr: float = 5e-4,
        lr_halving_start_epoch: int = 3,
        halve_in_start_epoch: bool = True,
        scheduler: str | None = None,
        plateau_patience: int = 2,
        lambda_start: float = 1.0,
        lambda_decay: float = 0.5,
        lambda_min: float = 0.01,
        alpha: float | None = None,
        region_weight: float | None = None,
        threshold: float = 0.5,
        k_grid: str | None = None,
        k_scale: float | None = None,
        k_min: int | None = None,
        k_region_map: str = "previous",
        eps: float | None = None,
        mask_scan_loss_for_unclear: bool | None = None,
        detach_region_maps: bool | None = None,
        dice_smooth: float | None = None,
        coarse_target: str | None = None,
        min_region_sum: float | None = None,
        scan_loss_scales: str | None = None,
        mil_mode: str = "dynamic",
        inference_regions: str = "predicted",
        supervision: str = "region",
        single_region: str | None = None,
        dice_threshold: float | str = 0.5,
        decision_threshold: float | str = 0.5,
        threshold_rule: str = "youden",
        threshold_target: float = 0.9,
    ) -> None:
        super().__init__()
        check_dice_threshold(dice_threshold)
        check_top_k_threshold(threshold)
        self.save_hyperparameters()
        self.decision_threshold = self.init_decision_threshold(
            decision_threshold, threshold_rule, threshold_target, key="model.decision_threshold"
        )
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
            "scheduler": scheduler,
        }
        options, switched = resolve(variant, {k: v for k, v in given.items() if v is not None})
        if switched:
            log.info(
                "model.variant=%s: options at the paper's value take the released code's: %s",
                variant,
                ", ".join(f"{k}={new!r} (config: {old!r})" for k, (old, new) in switched.items()),
            )
        self.hparams.update(options)  # what the run uses, in hparams.yaml and the checkpoint
        self.space = LabelSpace.from_config(**(label_space or {}))
        self.n_regions, self.n_types = len(self.space.anatomical_regions), len(self.space.types)
        net_cfg = dict(network or {})
        if variant == "released_code":
            net_cfg.setdefault("abnormality_activation", "softmax")
        self.net = DaMILNet(self.n_regions, self.n_types, **net_cfg)
        for name, value, allowed in (
            ("mil_mode", mil_mode, ("dynamic", "static")),
            ("inference_regions", inference_regions, ("predicted", "atlas")),
            ("supervision", supervision, ("region", "scan")),
        ):
            if value not in allowed:
                raise ValueError(f"model.{name}={value!r}; choose one of {allowed}.")
        if single_region is not None and single_region not in self.space.anatomical_regions:
            raise ValueError(
                f"model.single_region={single_region!r} is not one of {self.space.anatomical_regions}."
            )
        # Placeholder rates; filled from the training split in setup() and saved with the checkpoint.
        self.criterion = DaMILLoss(
            np.full((self.n_regions, self.n_types), 0.5),
            np.full(self.n_types, 0.5),
            variant=variant,
            threshold=threshold,
            k_region_map=k_region_map,
            **{k: v for k, v in options.items() if k != "scheduler"},
        )
        self.region_mask = torch.ones(self.n_regions, 1)
        if single_region is not None:
            self.region_mask = torch.zeros(self.n_regions, 1)
            self.region_mask[self.space.anatomical_regions.index(single_region)] = 1

    @classmethod
    def from_checkpoint(cls, checkpoint_path: str, overrides: Mapping[str, Any] | None = None) -> DaMILModule:
        """The trained analyzer of ``checkpoint_path`` built with its own hyper-parameters (``overrides``
        replace some, e.g. ``dice_threshold``), weights loaded; read with ``torch.load(weights_only=True)``.
        A test-only run of another experiment (``experiment=damil_cq500``) so gets the network it trained."""
        if not checkpoint_path:
            raise FileNotFoundError(
                "model.checkpoint_path is not set: give the trained analyzer, ckpt_path=<run>/checkpoints/<best>.ckpt"
            )
        checkpoint = load_checkpoint(checkpoint_path)
        manifest = checkpoint.get("label_manifest") or {}
        if manifest.get("task") != DAMIL_TASK or "hyper_parameters" not in checkpoint:
            raise CheckpointManifestError(
                f"{checkpoint_path}: a {manifest.get('task')!r} checkpoint, not a DaMIL analyzer's ({DAMIL_TASK!r}) "
                "with its hyper-parameters; give the best checkpoint of a damil_* training run."
            )
        hparams = {**dict(checkpoint["hyper_parameters"]), **dict(overrides or {})}
        try:
            module = cls(**hparams)
        except TypeError as err:
            raise CheckpointManifestError(
                f"{checkpoint_path}: its hyper-parameters do not fit this version's DaMILModule ({err})."
            ) from None
        module.load_state_dict(checkpoint["state_dict"])
        module.label_thresholds = chosen_thresholds(manifest)
        return module

    # ----------------------------------------------------------------- set-up from the training split
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and dm is not None and getattr(dm, "positive_rates", None) is not None:
            self.criterion.set_rates(dm.positive_rates, dm.scan_positive_rates)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the label manifest
        # The z-scoring statistics of the training split travel with the weights (inference elsewhere).
        dm = getattr(self.trainer, "datamodule", None)
        stats = getattr(dm, "stats", None)
        if stats is not None:
            checkpoint["intensity_stats"] = {"mean": stats.mean, "std": stats.std}
        if getattr(dm, "preprocess", None) is not None:  # reportsup-damil-predict preprocesses the same way
            checkpoint["preprocessing"] = {k: v for k, v in vars(dm.preprocess).items() if k != "extra"}

    def forward(self, image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.net(image)

    @property
    def seg_weight(self) -> float:
        return segmentation_weight(
            self.current_epoch, self.hparams.lambda_start, self.hparams.lambda_decay, self.hparams.lambda_min
        )

    def atlas_regions(self, batch: Mapping[str, Any], outputs) -> list[torch.Tensor]:
        """The atlas coarse segmentation as one-hot bags on each output grid (static MIL, ablations C/D)."""
        if "region_mask" not in batch:
            raise ValueError("mil_mode=static / inference_regions=atlas need data.region_mask_column.")
        return [
            region_one_hot(downsample_labels(batch["region_mask"], s.shape[2:]), self.n_regions).to(s.dtype)
            for s, _ in outputs
        ]

    def _losses(self, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list]:
        batch = plain_tensors(batch)
        outputs = self(batch["image"])
        override = self.atlas_regions(batch, outputs) if self.hparams.mil_mode == "static" else None
        labels = batch["region_labels"].float()
        # Single-region ablation: only that region's bags enter the region-level MIL loss.
        cell_mask = self.region_mask.to(labels) if self.hparams.single_region is not None else None
        losses = self.criterion(
            outputs,
            batch.get("region_mask"),
            labels,
            batch["scan_labels"].float(),
            batch["unclear"],
            self.seg_weight,
            override,
            cell_mask,
        )
        if self.hparams.supervision == "scan":
            losses["loss"] = (
                self.seg_weight * losses["segmentation"] + self.criterion.alpha * losses["scan_mil"]
            )
        return losses, outputs

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        losses, _ = self._losses(batch)
        n = len(batch["image"])
        self.log_losses("train", losses, n)
        self.log("train/lambda", self.seg_weight, on_epoch=True, on_step=False, batch_size=n)
        return losses["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        losses, outputs = self._losses(batch)
        self.log_losses("val", losses, len(batch["image"]))
        if self.choose_on_validation:  # the same outputs, no second forward pass
            pred = self.predictions(plain_tensors(batch), outputs)
            self.keep_scan_validation_outputs(batch, pred["region_probs"], pred["scan_probs"])

    # ----------------------------------------------------------------- inference
    def predict_scan(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Final-scale region x type probabilities, scan probabilities and the final maps."""
        batch = plain_tensors(batch)
        return self.predictions(batch, self(batch["image"]))

    def predictions(self, batch: Mapping[str, Any], outputs: list) -> dict[str, torch.Tensor]:
        """:meth:`predict_scan` from the network's outputs of ``batch``."""
        override = None
        if self.hparams.mil_mode == "static" or self.hparams.inference_regions == "atlas":
            override = self.atlas_regions(batch, outputs)
        region = self.criterion.region_predictions(outputs, override)[-1]
        scan = scan_predictions(outputs)[-1]
        s, d = outputs[-1]
        bags = override[-1] if override is not None else s
        return {
            "region_probs": region,
            "scan_probs": scan,
            "region_max": max_mil_pooling(bags.float(), d.float()),
            "regions": s,
            "abnormality": d,
        }

    def configure_optimizers(self) -> Any:
        if self.hparams.scheduler == "plateau":
            optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=0.5, patience=self.hparams.plateau_patience
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": plateau, "monitor": "val/region_mil", "interval": "epoch"},
            }
        return self.halving_adam()
