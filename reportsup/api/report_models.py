"""Text models (ALARM and spine report classifiers, the Cross-DL discretizer) from a run folder, a
checkpoint or an exported folder, and their weights in the exported layout.

An exported text model keeps everything :meth:`ReportModel.from_state` needs without unpickling: the
label manifest (without the encoder's file contents) and the encoder's ``config.json`` in
``config.json["reportsup"]``, the tokenizer files beside it, the weights in ``model.safetensors``.

The spine report classifier with ``pooling=cls`` *is* BERT's sequence classifier (Devlin et al.; the
spine paper uses Simple Transformers' ``ClassificationModel``, i.e. ``BertForSequenceClassification``):
[CLS] -> dense + tanh (BERT's pooler) -> dropout -> linear, one logit per finding. For a BERT encoder its
weights are therefore exported under ``transformers``' names, and ``config.json`` is also a valid
``BertConfig`` (``problem_type=multi_label_classification``: a sigmoid per logit, as here), so
``AutoModelForSequenceClassification.from_pretrained(folder)`` gives the same logits. The only state it
does not hold is the class-weight buffer (a training-time loss weight), kept in the reportsup section.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightning_modules.alarm.module import ALARMClassifier
from lightning_modules.common.label_manifest import label_thresholds
from lightning_modules.common.report_model import ReportModel
from lightning_modules.crossdl.discretizer.module import DiscretizerModule
from lightning_modules.spine.report_module import SpineReportClassifier
from reportsup.api.loading import (
    EXPORTED_WEIGHTS,
    ModelSourceError,
    is_exported,
    load_checkpoint,
    read_exported,
    reportsup_config,
    resolve,
)
from reportsup.version import __version__

#: the report models by manifest task
REPORT_MODELS: dict[str, type[ReportModel]] = {
    cls.TASK: cls for cls in (ALARMClassifier, SpineReportClassifier, DiscretizerModule)
}
#: report classifiers: one sigmoid output per label (the rest of the report models: the discretizer)
CLASSIFIER_TASKS = (ALARMClassifier.TASK, SpineReportClassifier.TASK)

#: ``weights_layout`` values of an exported folder
LAYOUT_REPORTSUP = "reportsup"
LAYOUT_BERT_SEQUENCE_CLASSIFIER = "transformers:BertForSequenceClassification"
#: the encoder's own config inside ``config.json["reportsup"]`` and in the manifest's ``files``
ENCODER_CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class ModelSource:
    """Where a model was loaded from: the resolved path (a ``.ckpt`` or an exported folder) and the
    SHA-256 of its weights file (the checkpoint, or ``model.safetensors``), which identifies the labeller."""

    path: Path
    sha256: str
    exported: bool


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_source(path: str | Path) -> ModelSource:
    """:func:`~reportsup.api.loading.resolve` ``path`` and fingerprint its weights."""
    resolved = resolve(path)
    exported = is_exported(resolved)
    weights = resolved / EXPORTED_WEIGHTS if exported else resolved
    return ModelSource(resolved, file_sha256(weights), exported)


def report_model_class(
    task: str | None, where: str, allowed: tuple[str, ...] | None = None
) -> type[ReportModel]:
    """The model class of a manifest ``task``; a clear error for other components' models."""
    if task in REPORT_MODELS and (allowed is None or task in allowed):
        return REPORT_MODELS[task]
    expected = list(allowed or REPORT_MODELS)
    raise ValueError(
        f"{where}: a model of task {task!r}; expected one of {expected}. "
        "Image models load with reportsup.ScanAnalyzer or reportsup.SpineImageClassifier."
    )


def load_report_model(
    path: str | Path,
    trust_checkpoint: bool = False,
    allowed: tuple[str, ...] | None = None,
) -> tuple[ReportModel, ModelSource]:
    """A report model in eval mode (CPU) from a run folder, a checkpoint or an exported folder, and its source.

    Checkpoints are read with ``weights_only=True`` (``trust_checkpoint=True`` allows unpickling a
    trusted one); exported folders with safetensors and json only.
    """
    source = model_source(path)
    where = str(source.path)
    if source.exported:
        config, state = read_exported(source.path)
        section = reportsup_config(config, where=where)
        manifest = exported_manifest(source.path, section)
        cls = report_model_class(manifest.get("task"), where, allowed)
        state = state_from_layout(state, section)
    else:
        checkpoint = load_checkpoint(source.path, trust_checkpoint=trust_checkpoint)
        manifest = checkpoint.get("label_manifest")
        cls = report_model_class((manifest or {}).get("task"), where, allowed)
        state = checkpoint["state_dict"]
    return cls.from_state(manifest, state, where=where), source


# -- the exported layout -----------------------------------------------------------------------


def manifest_without_files(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The label manifest with the encoder's file contents left out (they become files of their own)."""
    encoder = {k: v for k, v in manifest["encoder"].items() if k != "files"}
    return {**manifest, "encoder": encoder}


def exported_manifest(folder: Path, section: Mapping[str, Any]) -> dict[str, Any]:
    """The full label manifest again: the encoder's ``files`` read back from the folder."""
    manifest = dict(section["label_manifest"])
    files = {}
    for name in section["tokenizer_files"]:
        path = folder / name
        if not path.is_file():
            raise ModelSourceError(f"{folder}: tokenizer file {name} listed in config.json is missing.")
        files[name] = path.read_text(encoding="utf-8")
    files[ENCODER_CONFIG_FILE] = json.dumps(section["encoder_config"], indent=2)
    manifest["encoder"] = {**manifest["encoder"], "files": files}
    return manifest


def bert_sequence_classifier(model: ReportModel) -> bool:
    """Whether ``model`` has exactly the shape of ``BertForSequenceClassification`` (see the module docstring)."""
    return (
        isinstance(model, SpineReportClassifier)
        and model.hparams.pooling == "cls"
        and model.encoder.model.config.model_type == "bert"
    )


def exported_state(model: ReportModel) -> tuple[dict[str, torch.Tensor], str]:
    """``(state dict under the exported names, weights_layout)``."""
    state = model.state_dict()
    if not bert_sequence_classifier(model):
        return dict(state), LAYOUT_REPORTSUP
    out = {}
    for name, tensor in state.items():
        if name.startswith("encoder.model."):
            out["bert." + name.removeprefix("encoder.model.")] = tensor
        elif name.startswith("pooler.0."):
            out["bert.pooler.dense." + name.removeprefix("pooler.0.")] = tensor
        elif name.startswith("classifier.1."):
            out["classifier." + name.removeprefix("classifier.1.")] = tensor
        elif name != "class_weights":  # a training-time loss weight, kept in the manifest
            raise ValueError(f"{type(model).__name__}: no BertForSequenceClassification name for {name!r}.")
    return out, LAYOUT_BERT_SEQUENCE_CLASSIFIER


def state_from_layout(
    state: Mapping[str, torch.Tensor], section: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """The inverse of :func:`exported_state`: reportsup's names again."""
    layout = section.get("weights_layout", LAYOUT_REPORTSUP)
    if layout == LAYOUT_REPORTSUP:
        return dict(state)
    if layout != LAYOUT_BERT_SEQUENCE_CLASSIFIER:
        raise ModelSourceError(
            f"config.json: weights_layout {layout!r} is unknown to reportsup {__version__}."
        )
    out = {}
    for name, tensor in state.items():
        if name.startswith("bert.pooler.dense."):
            out["pooler.0." + name.removeprefix("bert.pooler.dense.")] = tensor
        elif name.startswith("bert."):
            out["encoder.model." + name.removeprefix("bert.")] = tensor
        elif name.startswith("classifier."):
            out["classifier.1." + name.removeprefix("classifier.")] = tensor
    weights = section["label_manifest"].get("class_weights")
    if weights is not None:
        out["class_weights"] = torch.tensor(weights, dtype=torch.float32)
    return out


def exported_config(model: ReportModel, layout: str, source: ModelSource | None = None) -> dict[str, Any]:
    """``config.json`` of an exported text model: the reportsup section, and for the BERT sequence
    classifier layout also the ``transformers`` config fields."""
    manifest = model.label_manifest()
    manifest["framework_version"] = getattr(model, "trained_with_version", None) or __version__
    files = manifest["encoder"]["files"]
    encoder_config = json.loads(files[ENCODER_CONFIG_FILE])
    section = {
        "format": "reportsup-exported-model",
        "format_version": 1,
        "reportsup_version": __version__,
        "task": manifest["task"],
        "labels": manifest["labels"],
        "threshold": manifest["threshold"],
        # per label, what the 0/1 labels apply: chosen on validation where the model has them (issue 22)
        "thresholds": label_thresholds(manifest),
        "preprocessing": manifest["text_preprocessing"],
        "weights_layout": layout,
        "label_manifest": manifest_without_files(manifest),
        "encoder_config": encoder_config,
        "tokenizer_files": sorted(name for name in files if name != ENCODER_CONFIG_FILE),
    }
    if source is not None:
        section["source"] = {"file": source.path.name, "sha256": source.sha256}
    config: dict[str, Any] = {}
    if layout == LAYOUT_BERT_SEQUENCE_CLASSIFIER:
        labels = list(manifest["labels"])
        config = {
            **encoder_config,
            "architectures": ["BertForSequenceClassification"],
            "problem_type": "multi_label_classification",  # a sigmoid per finding, as the model trains
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
            "classifier_dropout": float(model.hparams.dropout),
        }
    return {**config, "reportsup": section}


def tokenizer_files(model: ReportModel) -> dict[str, str]:
    """The tokenizer's files (as saved by ``save_pretrained``) by name."""
    files = model.label_manifest()["encoder"]["files"]
    return {name: text for name, text in files.items() if name != ENCODER_CONFIG_FILE}
