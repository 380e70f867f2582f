"""SpineResNet: ResNet-18 on the fused coronal + sagittal radiographs (spine study, "Automated Diagnosis
From Radiographic Images").

torchvision's ResNet-18 pre-trained on ImageNet, its last layer replaced by one output per finding
(the paper trains one model per finding; several findings in one run give a multi-label model, an
option). SGD, lr 0.001, momentum 0.9, batch 32, at most 200 epochs; binary cross-entropy (the paper's
loss is not stated). The three training regimes differ only in data and initial weights:

* ``1step``: machine labels, ImageNet weights;
* ``2steps``: the refinement set's human labels, starting from a 1step checkpoint (``init_checkpoint``);
* ``step2only``: the refinement set's human labels, ImageNet weights.

Every checkpoint's label manifest records where the initial weights came from (source, file, SHA-256
of the initial state), so a run proves what it started from.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from lightning_modules.common.checkpoints import load_checkpoint
from lightning_modules.common.label_manifest import (
    CheckpointManifestError,
    build_manifest,
    check_manifest,
    chosen_thresholds,
)
from lightning_modules.common.losses import masked_bce_with_logits
from lightning_modules.common.report_model import LabelClassifier, ValidationAUROC
from reportsup.contracts.run_dir import best_checkpoints_below

IMAGENET_WEIGHTS = "IMAGENET1K_V1"


class PretrainedWeightsUnavailableError(RuntimeError):
    """ImageNet weights neither cached, nor given as a file, nor downloadable here."""


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names and values of a state dict (order-independent, device-independent)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _download_reachable(url: str, timeout: float = 3.0) -> bool:
    host = url.split("/")[2]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def imagenet_state(weights_path: str | None) -> tuple[dict[str, torch.Tensor], str]:
    """ResNet-18 ImageNet weights from ``weights_path``, torch's hub cache, or a download; and their source."""
    weights = ResNet18_Weights.IMAGENET1K_V1
    hint = (
        f"Download {weights.url} where you have internet and set model.weights_path=/path/{Path(weights.url).name}, "
        "or set model.weights=null to start from random weights (the demo does)."
    )
    if weights_path:
        if not Path(weights_path).is_file():
            raise PretrainedWeightsUnavailableError(
                f"model.weights_path={weights_path}: file not found. {hint}"
            )
        return torch.load(weights_path, map_location="cpu", weights_only=True), str(weights_path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file() and not _download_reachable(weights.url):
        raise PretrainedWeightsUnavailableError(
            f"ResNet-18 ImageNet weights ({IMAGENET_WEIGHTS}) are not in {cached.parent} and "
            f"{weights.url} cannot be reached. {hint}"
        )
    return weights.get_state_dict(progress=False, check_hash=True), weights.url


class SpineResNet(ValidationAUROC, LabelClassifier):
    """Fused radiograph ``(B, 3, H, W)`` -> one logit per finding.

    Args:
        labels: findings in output order.
        optimizer: partial of a torch optimizer (paper: SGD, lr 0.001, momentum 0.9).
        weights: ``IMAGENET1K_V1`` (paper) or ``None`` for random initialisation (asked for explicitly).
        weights_path: a local copy of the ImageNet weights file (no download).
        init_checkpoint: a SpineResNet checkpoint to start from (the 2steps regime: the 1step model).
        require_init_checkpoint: refuse to start without ``init_checkpoint`` (the 2steps regime: without
            it, 2steps would silently train as step2only from ImageNet weights).
        threshold: decision threshold stored in the manifest (the paper reports 0.5 and Youden cut-offs),
            or ``validation``: per-finding thresholds chosen on the validation set (issue 22 item 3,
            :class:`~lightning_modules.common.report_model.LabelClassifier`).
        threshold_rule, threshold_target: how ``threshold=validation`` chooses (``youden``, or a target
            ``sensitivity`` / ``specificity``).
        image_preprocessing: how inputs were made (image size, G channel, normalisation), for the manifest.
    """

    TASK = "spine_resnet18"

    def __init__(
        self,
        labels: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        weights: str | None = IMAGENET_WEIGHTS,
        weights_path: str | None = None,
        init_checkpoint: str | None = None,
        threshold: float | str = 0.5,
        image_preprocessing: Mapping[str, Any] | None = None,
        require_init_checkpoint: bool = False,
        threshold_rule: str = "youden",
        threshold_target: float = 0.9,
    ) -> None:
        if require_init_checkpoint and not init_checkpoint:
            raise ValueError(
                "model.init_checkpoint is not set: the 2steps regime fine-tunes the 1step model. Set "
                "model.init_checkpoint=outputs/spine_resnet18_1step/<run or multirun folder> (or a .ckpt), "
                "or run experiment=spine_resnet18_step2only to train on the refinement set from ImageNet weights."
            )
        super().__init__(labels, optimizer, scheduler, threshold, threshold_rule, threshold_target)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.network = resnet18(weights=None)
        self.init = self._initialise(weights, weights_path, init_checkpoint)
        self.init_validation_auroc()

    def _initialise(
        self, weights: str | None, weights_path: str | None, init_checkpoint: str | None
    ) -> dict[str, Any]:
        """Load the starting weights; returns the manifest's ``init`` record."""
        if weights not in (IMAGENET_WEIGHTS, None):
            raise ValueError(
                f"model.weights={weights!r}: {IMAGENET_WEIGHTS} or null (random initialisation)."
            )
        init: dict[str, Any] = {"source": "random"}
        if weights == IMAGENET_WEIGHTS and init_checkpoint is None:
            state, origin = imagenet_state(weights_path)
            self.network.load_state_dict(state)
            init = {"source": "imagenet", "file": origin}
        self.network.fc = nn.Linear(self.network.fc.in_features, len(self.labels))
        if init_checkpoint is not None:
            path = self._find_checkpoint(Path(init_checkpoint))
            if not path.is_file():
                raise FileNotFoundError(
                    f"model.init_checkpoint={path}: not found. The 2steps regime starts from a 1step checkpoint "
                    "(outputs/spine_resnet18_1step/<run>/checkpoints/best-*.ckpt)."
                )
            checkpoint = load_checkpoint(path)
            check_manifest(checkpoint.get("label_manifest"), self._manifest_core(), where=str(path))
            state = {
                k.removeprefix("network."): v
                for k, v in checkpoint["state_dict"].items()
                if k.startswith("network.")
            }
            self.network.load_state_dict(state)
            init = {
                "source": "checkpoint",
                "file": str(path.resolve()),
                "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        init["state_sha256"] = state_digest(self.network.state_dict())
        return init

    def _find_checkpoint(self, path: Path) -> Path:
        """``path`` itself, or in a run / multirun folder the best checkpoint trained on the same findings
        (a per-finding 1step multirun holds one run per finding)."""
        if not path.is_dir():
            return path
        matches = []
        for ckpt in best_checkpoints_below(path):
            manifest = load_checkpoint(ckpt).get("label_manifest") or {}
            if manifest.get("task") == self.TASK and manifest.get("labels") == self.labels:
                matches.append(ckpt)
        if len(matches) != 1:
            raise FileNotFoundError(
                f"model.init_checkpoint={path}: {len(matches)} best checkpoints of {self.TASK} with labels "
                f"{self.labels} in this folder{': ' + ', '.join(map(str, matches)) if matches else ''}; give one file."
            )
        return matches[0]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        return masked_bce_with_logits(logits.float(), batch["targets"]), logits

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        return {
            "index": batch["index"],
            "probs": torch.sigmoid(self(batch["image"]).float()),
            "targets": batch["targets"],
        }

    # -- label manifest ----------------------------------------------------------------------
    def _manifest_core(self) -> dict[str, Any]:
        return build_manifest(self.TASK, self.labels, {}, self.threshold, thresholds=self.label_thresholds)

    def label_manifest(self) -> dict[str, Any]:
        return self._manifest_core() | {
            "init": self.init,
            "image_preprocessing": dict(self.hparams.get("image_preprocessing") or {}),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["label_manifest"] = self.label_manifest()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_manifest(checkpoint.get("label_manifest"), self._manifest_core())
        # the thresholds chosen on validation for these weights (testing reports the metrics at them)
        self.label_thresholds = chosen_thresholds(checkpoint.get("label_manifest"))

    @classmethod
    def from_checkpoint(cls, path: str | Path, trust_checkpoint: bool = False) -> SpineResNet:
        """The trained model from its checkpoint alone (random init, then the checkpoint's weights),
        read with ``torch.load(weights_only=True)`` (:func:`~lightning_modules.common.checkpoints.load_checkpoint`:
        a SpineResNet checkpoint holds tensors and plain values only)."""
        return cls.from_checkpoint_dict(
            load_checkpoint(path, trust_checkpoint=trust_checkpoint), where=str(path)
        )

    @classmethod
    def from_checkpoint_dict(cls, checkpoint: Mapping[str, Any], where: str = "checkpoint") -> SpineResNet:
        """The trained model from a loaded checkpoint (``label_manifest`` + ``state_dict``), in eval mode."""
        manifest = checkpoint.get("label_manifest") or {}
        if manifest.get("task") != cls.TASK:
            raise CheckpointManifestError(
                f"{where}: task {manifest.get('task')!r}, not a {cls.TASK} checkpoint."
            )
        check_manifest(manifest, build_manifest(cls.TASK, manifest["labels"], {}, 0.5), where=where)
        model = cls(
            labels=manifest["labels"],
            optimizer=torch.optim.SGD,
            weights=None,
            threshold=manifest["threshold"],
            image_preprocessing=manifest.get("image_preprocessing"),
        )
        model.init = manifest.get("init", model.init)
        model.label_thresholds = chosen_thresholds(manifest)
        model.load_state_dict(checkpoint["state_dict"])
        return model.eval()
