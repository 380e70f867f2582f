"""Classification baselines of the DaMIL ablation study (Liu et al. 2023, "Ablation study", Table S2):

* A (``attention=False``): the DaMIL network's convolutional layers, then (N + 1) x M binary
  classification heads (N regions and the whole scan, M types) on globally averaged features;
* B (``attention=True``): the same with a spatial attention map per region (and one for the scan)
  pooling the features before each region's heads;
* GradCAM (``gradcam=True``, experiment ``damil_gradcam``): abnormality maps of model A from captum's
  LayerGradCam on the last decoder stage, target = the scan-level logit of each type, scored with the
  same Dice as DaMIL's maps (needs ``trainer.inference_mode=false``: GradCAM differentiates at test time).

The loss mirrors DaMIL's MIL terms for comparability: weighted BCE over the N x M region heads (positive
weights from the training rates; 0 for unclear scans), logged as ``region_mil`` (the checkpoint
monitor), plus alpha x BCE of the scan heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.common.monai_batches import plain_tensors
from lightning_modules.crossdl.damil.dice_threshold import check_dice_threshold
from lightning_modules.crossdl.damil.losses import positive_weights, weighted_bce
from lightning_modules.crossdl.damil.module import ScanModelSteps
from lightning_modules.crossdl.damil.network import DaMILBackbone
from reportsup.contracts.labels.crossdl import LabelSpace


class RegionClassifierNet(nn.Module):
    """Backbone + (N + 1) x M logits, optionally with per-region spatial attention (ablations A, B)."""

    def __init__(
        self,
        n_regions: int = 17,
        n_types: int = 4,
        attention: bool = False,
        base_filters: int = 16,
        depth: int = 5,
        norm: str = "instance",
        negative_slope: float = 0.3,
        gradient_checkpointing: bool = False,
        n_scales: int | None = None,  # accepted so that the DaMIL network config can be shared
    ) -> None:
        super().__init__()
        self.backbone = DaMILBackbone(1, base_filters, depth, norm, negative_slope, gradient_checkpointing)
        ch = self.backbone.decoder_channels[-1]
        self.n_bags, self.n_types = n_regions + 1, n_types
        self.attention = nn.Conv3d(ch, self.n_bags, 1) if attention else None
        self.weight = nn.Parameter(torch.randn(self.n_bags, ch, n_types) * ch**-0.5)
        self.bias = nn.Parameter(torch.zeros(self.n_bags, n_types))

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image)[-1]

    def head(self, f: torch.Tensor) -> torch.Tensor:
        flat = f.flatten(2)  # (B, C, V)
        if self.attention is None:
            pooled = flat.mean(-1)[:, None].expand(-1, self.n_bags, -1)
        else:
            weights = torch.softmax(self.attention(f).flatten(2), dim=-1)  # (B, R, V)
            pooled = torch.einsum("brv,bcv->brc", weights, flat)
        return torch.einsum("brc,rcm->brm", pooled, self.weight) + self.bias

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, N + 1, M) logits; row N is the whole scan."""
        return self.head(self.features(image))


class DaMILClassifierModule(ScanModelSteps, pl.LightningModule):
    TASK = "damil_ablation_classifier"

    def __init__(
        self,
        label_space: Mapping[str, Any] | None = None,
        network: Mapping[str, Any] | None = None,
        attention: bool = False,
        gradcam: bool = False,
        lr: float = 5e-4,
        lr_halving_start_epoch: int = 3,
        halve_in_start_epoch: bool = True,
        alpha: float = 0.1,
        eps: float = 1e-3,
        dice_threshold: float | str = 0.5,
        decision_threshold: float | str = 0.5,
        threshold_rule: str = "youden",
        threshold_target: float = 0.9,
        **_ignored: Any,  # DaMIL-only options of a shared model config (variant, lambda_*, ...)
    ) -> None:
        super().__init__()
        check_dice_threshold(dice_threshold)
        self.save_hyperparameters()
        self.decision_threshold = self.init_decision_threshold(
            decision_threshold, threshold_rule, threshold_target, key="model.decision_threshold"
        )
        self.space = LabelSpace.from_config(**(label_space or {}))
        self.n_regions, self.n_types = len(self.space.anatomical_regions), len(self.space.types)
        self.net = RegionClassifierNet(self.n_regions, self.n_types, attention, **dict(network or {}))
        self.register_buffer("pos_weight", torch.ones(self.n_regions, self.n_types))

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and dm is not None and getattr(dm, "positive_rates", None) is not None:
            self.pos_weight.copy_(positive_weights(dm.positive_rates, self.hparams.eps))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def _losses(self, batch: Mapping[str, Any], probs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        batch = plain_tensors(batch)
        if probs is None:
            probs = torch.sigmoid(self(batch["image"]).float())
        keep = 1.0 - batch["unclear"].float()
        region = (
            weighted_bce(probs[:, : self.n_regions], batch["region_labels"].float(), self.pos_weight) * keep
        )
        scan = weighted_bce(probs[:, self.n_regions], batch["scan_labels"].float()) * keep
        return {
            "loss": (region + self.hparams.alpha * scan).mean(),
            "region_mil": region.mean(),
            "scan_mil": scan.mean(),
        }

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self._losses(batch)
        self.log_losses("train", losses, len(batch["image"]), sync_dist=False)
        return losses["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        probs = torch.sigmoid(self(plain_tensors(batch)["image"]).float())
        self.log_losses("val", self._losses(batch, probs), len(batch["image"]))
        self.keep_scan_validation_outputs(batch, probs[:, : self.n_regions], probs[:, self.n_regions])

    def gradcam_maps(self, image: torch.Tensor) -> torch.Tensor:
        """(B, M, h, w, d) GradCAM of each type's scan-level logit on the last decoder stage, in [0, 1]."""
        from captum.attr import LayerGradCam

        cam = LayerGradCam(lambda x: self.net(x)[:, self.n_regions], self.net.backbone.decoder[-1])
        with torch.enable_grad():
            maps = [cam.attribute(image.detach().requires_grad_(True), target=j) for j in range(self.n_types)]
        maps = F.relu(torch.cat(maps, 1)).detach()
        return maps / maps.flatten(2).amax(-1).clamp_min(1e-8)[..., None, None, None]

    def predict_scan(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        batch = plain_tensors(batch)
        image = batch["image"]
        f = self.net.features(image)
        probs = torch.sigmoid(self.net.head(f).float())
        size = f.shape[2:]
        if self.hparams.gradcam:
            maps = self.gradcam_maps(image)
        else:  # no localisation: empty maps (Dice 0 where a type is present)
            maps = torch.zeros(len(image), self.n_types, *size, device=image.device)
        return {
            "region_probs": probs[:, : self.n_regions],
            "scan_probs": probs[:, self.n_regions],
            "regions": torch.zeros(len(image), self.n_regions, *size, device=image.device),
            "abnormality": maps,
        }

    def configure_optimizers(self) -> Any:
        return self.halving_adam()
