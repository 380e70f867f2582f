"""The spine radiograph classifier as a Python API (spine study, "Automated Diagnosis From Radiographic
Images", Figure 2): the coronal and sagittal radiographs of a session, fused into one RGB image
(R = coronal, B = sagittal), through a ResNet-18 with one output per finding.

::

    from reportsup import SpineImageClassifier

    classifier = SpineImageClassifier.from_pretrained("outputs/spine_resnet18_2steps/<run>")
    table = classifier.predict("views.csv")  # session_id, patient_id, view, image
    table[["session_id", "scoliosis_prob", "scoliosis", "scoliosis_youden"]]
    classifier.save_pretrained("spine_export")  # model.safetensors + config.json, no pickle

Views are read, resized and fused exactly as in training (:mod:`datamodules.spine.radiographs`,
:class:`~datamodules.spine.datamodule.FusedViewsDataset`), with the image size and G channel recorded in
the checkpoint's label manifest (``image_preprocessing``). ``<finding>`` is the label at the model's
threshold (0.5, Table 2); ``<finding>_youden`` the label at the Youden cut-off chosen on the refinement
set (Table 3), present when the run wrote ``youden_cutoffs.json`` (or the exported config carries them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from datamodules.common.tables import read_table_file
from datamodules.spine.datamodule import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FusedViewsDataset,
    SpineDataError,
    check_session_images,
    pair_views,
)
from lightning_modules.common.label_manifest import CheckpointManifestError
from lightning_modules.spine.image_module import SpineResNet
from reportsup.api.image_cards import USAGE, card_files
from reportsup.api.loading import (
    REPORTSUP_KEY,
    is_exported,
    load_checkpoint,
    read_exported,
    reportsup_config,
    resolve,
    save_exported,
)
from reportsup.contracts.run_dir import (
    BEST_CHECKPOINT_PREFIX,
    CHECKPOINTS,
    YOUDEN_CUTOFFS,
    read_json,
    run_dir_of_checkpoint,
)
from reportsup.version import __version__

#: the views table's columns (the spine DataModule's ``data.views``); ``report_id`` is optional here
VIEW_COLUMNS = ("session_id", "patient_id", "view", "image")
#: the training pipeline's only normalisation (ImageNet statistics, the ResNet-18's initial weights)
NORMALISATION = "imagenet"


class SpineImageClassifier:
    """A trained SpineResNet with its image preprocessing and, if known, its Youden cut-offs.

    Args:
        model: the SpineResNet with its trained weights.
        image_size: ``(H, W)`` each view is resized to (paper: 512 x 512).
        green_channel: the fused image's G channel (``zeros`` in the paper).
        cutoffs: ``{finding: cut-off}``; a probability ``>=`` the cut-off is positive (``roc_curve``'s
            convention, as the evaluator scores them).

    Output columns: ``session_id``, ``patient_id``, and per finding ``<finding>_prob``, ``<finding>``
    (0/1: probability above the model's threshold) and ``<finding>_youden`` (0/1, findings with a cut-off).
    """

    task = SpineResNet.TASK

    def __init__(
        self,
        model: SpineResNet,
        image_size: tuple[int, int],
        green_channel: str = "zeros",
        cutoffs: Mapping[str, float] | None = None,
    ) -> None:
        self.model = model.eval()
        self.image_size = tuple(int(s) for s in image_size)
        self.green_channel = green_channel
        unknown = sorted(set(cutoffs or {}) - set(model.labels))
        if unknown:
            raise ValueError(f"cut-offs for {unknown}, which the model does not predict ({model.labels}).")
        self.cutoffs = {k: float(v) for k, v in (cutoffs or {}).items()}
        self.source: Path | None = None  # the .ckpt or exported folder it was loaded from

    @property
    def labels(self) -> list[str]:
        return list(self.model.labels)

    @property
    def threshold(self) -> float:
        return float(self.model.threshold)

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        map_location: str | torch.device = "cpu",
        trust_checkpoint: bool = False,
    ) -> SpineImageClassifier:
        """Load a run folder (its best checkpoint, and its ``youden_cutoffs.json``), a SpineResNet
        ``.ckpt`` or a folder written by :meth:`save_pretrained` / ``reportsup-export``. Checkpoints are
        read with ``torch.load(weights_only=True)``, exported folders with safetensors."""
        source = resolve(path)
        if is_exported(source):
            config, state = read_exported(source)
            classifier = cls._from_exported(reportsup_config(config, str(source)), state, str(source))
        else:
            checkpoint = load_checkpoint(source, map_location, trust_checkpoint)
            model = SpineResNet.from_checkpoint_dict(checkpoint, where=str(source))
            size, green = _view_preprocessing(model.label_manifest()["image_preprocessing"], str(source))
            classifier = cls(model, size, green, run_cutoffs(source))
        classifier.source = source
        return classifier

    @classmethod
    def _from_exported(
        cls, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str
    ) -> SpineImageClassifier:
        if config.get("task") != SpineResNet.TASK:
            raise CheckpointManifestError(
                f"{where}: an exported {config.get('task')!r} model, not a {SpineResNet.TASK} image classifier."
            )
        model = SpineResNet(
            labels=config["labels"],
            optimizer=torch.optim.SGD,
            weights=None,
            threshold=config["threshold"],
            image_preprocessing=config.get("image_preprocessing"),
        )
        model.init = config.get("label_manifest", {}).get("init", model.init)
        model.load_state_dict(dict(state))
        size, green = _view_preprocessing(config.get("image_preprocessing") or {}, where)
        return cls(model, size, green, config.get("youden_cutoffs"))

    # ----------------------------------------------------------------------------- export
    def config(self) -> dict[str, Any]:
        """The ``reportsup`` section of the exported ``config.json``."""
        manifest = self.model.label_manifest()
        return {
            "task": self.task,
            "framework_version": __version__,
            "architecture": "torchvision.models.resnet18",
            "labels": self.labels,
            "threshold": self.threshold,
            "youden_cutoffs": self.cutoffs,
            "image_preprocessing": {
                "image_size": list(self.image_size),
                "green_channel": self.green_channel,
                "normalisation": NORMALISATION,
                "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD),
            },
            "label_manifest": manifest,
        }

    def save_pretrained(self, folder: str | Path, run_dir: str | Path | None = None) -> Path:
        """Write ``model.safetensors``, ``config.json`` and the model card ``README.md`` (training data and
        test metrics from ``run_dir``, default: the run of the checkpoint it came from) into a new folder;
        :meth:`from_pretrained` rebuilds the classifier from it without unpickling."""
        usage = USAGE.format(cls="SpineImageClassifier", var="classifier", arg='"views.csv"')
        files = card_files(self.model.label_manifest(), self.source, run_dir, usage)
        return save_exported(folder, {REPORTSUP_KEY: self.config()}, self.model.state_dict(), files)

    # ----------------------------------------------------------------------------- inference
    def predict(
        self, views: str | Path | pd.DataFrame, batch_size: int = 16, num_workers: int = 0
    ) -> pd.DataFrame:
        """Per-finding probabilities and labels for every session of a views table (one row per image:
        ``session_id``, ``patient_id``, ``view`` = coronal | sagittal, ``image``; relative paths are
        relative to the table's folder, or to the working directory for a DataFrame)::

            views = pd.DataFrame({"session_id": ["s1", "s1"], "patient_id": ["p1", "p1"],
                                  "view": ["coronal", "sagittal"], "image": ["s1_ap.dcm", "s1_lat.dcm"]})
            classifier.predict(views)
        """
        sessions = session_table(views)
        # the training DataModule's check, before the first batch: every bad file at once, with its row
        check_session_images(sessions, views if not isinstance(views, pd.DataFrame) else "<views DataFrame>")
        labels = self.labels
        dataset = FusedViewsDataset(
            sessions, np.full((len(sessions), len(labels)), np.nan), self.image_size, self.green_channel
        )
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        device = next(self.model.parameters()).device
        probs = []
        with torch.no_grad():
            for batch in loader:
                probs.append(torch.sigmoid(self.model(batch["image"].to(device)).float()).cpu())
        p = torch.cat(probs).numpy() if probs else np.zeros((0, len(labels)), dtype=np.float32)
        out = dataset.table[["session_id", "patient_id"]].astype(str).copy()
        for j, label in enumerate(labels):
            out[f"{label}_prob"] = p[:, j]
            out[label] = (p[:, j] > self.threshold).astype("int8")
            if label in self.cutoffs:
                out[f"{label}_youden"] = (p[:, j] >= self.cutoffs[label]).astype("int8")
        return out


def session_table(views: str | Path | pd.DataFrame) -> pd.DataFrame:
    """One row per session with its coronal and sagittal image paths (:func:`~datamodules.spine.datamodule.pair_views`:
    every problem named with its rows), from a views table file or DataFrame. The image files are checked
    by :meth:`SpineImageClassifier.predict` (:func:`~datamodules.spine.datamodule.check_session_images`)."""
    if isinstance(views, pd.DataFrame):
        table, source = views.reset_index(drop=True).copy(), Path.cwd() / "<views DataFrame>"
    else:
        source = Path(views)
        if not source.is_file():
            raise SpineDataError(f"{source}: views table not found.")
        table = read_table_file(source)
    missing = [c for c in VIEW_COLUMNS if c not in table.columns]
    if missing:
        raise SpineDataError(
            f"{source}: missing column(s) {missing}; a views table has {list(VIEW_COLUMNS)} "
            f"(found {list(table.columns)})."
        )
    for column in VIEW_COLUMNS:
        table[column] = table[column].astype(str).str.strip()
    return pair_views(table, source)


def run_cutoffs(checkpoint: Path) -> dict[str, float]:
    """The Youden cut-offs of the run a checkpoint belongs to (``<run>/youden_cutoffs.json``, written by
    :class:`~lightning_modules.spine.evaluation.SpineEvaluator` after testing that checkpoint), or ``{}``."""
    if checkpoint.parent.name != CHECKPOINTS or not checkpoint.name.startswith(BEST_CHECKPOINT_PREFIX):
        return {}  # the cut-offs were chosen with the outputs of the tested (best) checkpoint
    path = run_dir_of_checkpoint(checkpoint) / YOUDEN_CUTOFFS
    if not path.is_file():
        return {}
    cutoffs = read_json(path).get("cutoffs", {})
    return {label: float(entry["cutoff"]) for label, entry in cutoffs.items()}


def _view_preprocessing(recorded: Mapping[str, Any], where: str) -> tuple[tuple[int, int], str]:
    """``(image_size, green_channel)`` from a manifest's ``image_preprocessing``; an error naming the fix
    when the model does not record them (the same model on differently sized views predicts otherwise)."""
    if "image_size" not in recorded:
        raise CheckpointManifestError(
            f"{where}: its label manifest does not record image_preprocessing.image_size, so the views "
            "cannot be prepared as in training. Train with configs/model/spine_resnet18.yaml (it records "
            "image_size and green_channel), or build SpineImageClassifier(model, image_size, green_channel) yourself."
        )
    normalisation = recorded.get("normalisation", NORMALISATION)
    if normalisation != NORMALISATION:
        raise CheckpointManifestError(
            f"{where}: image_preprocessing.normalisation={normalisation!r}; this reportsup normalises with {NORMALISATION}."
        )
    size = tuple(int(s) for s in recorded["image_size"])
    if len(size) != 2:
        raise CheckpointManifestError(
            f"{where}: image_preprocessing.image_size={list(size)}; expected [H, W]."
        )
    return size, str(recorded.get("green_channel", "zeros"))
