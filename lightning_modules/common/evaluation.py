"""Test-set evaluation callback: predictions, metrics with bootstrap CIs, ROC plots (DESIGN.md run directory).

For every test set the DataModule names (the internal ``report_label`` split and each hold-out) and
every label: AUROC, accuracy, balanced accuracy, sensitivity, specificity and F1 at the threshold,
each with a patient-level bootstrap 95 % CI (Wood et al. 2021, Tables 3-4), and (issue 22 item 2)
average precision, PPV, NPV, the expected calibration error and the Brier score. Writes
``predictions_<set>.csv``, ``metrics.json`` and ``plots/roc_<label>.png``, ``plots/pr_<label>.png``,
``plots/calibration_<label>.png``; logs ``test/<set>/<label>/<metric>`` to every logger, and to W&B
also the predictions tables and the images.

With ``model.threshold=validation`` (issue 22 item 3) the model carries per-label thresholds chosen on
the validation set (:class:`~lightning_modules.common.report_model.LabelClassifier`); every test set is
then scored a second time at them, as ``<set>@val_threshold`` in ``metrics.json`` (each label with its
``threshold``), and the thresholds are written to ``val_thresholds.json``. Under DDP the predictions of
all ranks are gathered and de-duplicated (DistributedSampler pads) before rank 0 scores them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from reportsup.analysis.metrics import (
    ECE_BINS,
    METRICS,
    THRESHOLD_FREE,
    confusion_counts,
    patient_bootstrap_ci,
)
from reportsup.analysis.plots import plot_confusion, plot_precision_recall, plot_reliability, plot_roc
from reportsup.contracts.run_dir import (
    CALIBRATION_PLOT_PREFIX,
    LABEL_MANIFEST,
    METRICS_JSON,
    PR_PLOT_PREFIX,
    ROC_PLOT_PREFIX,
    VAL_THRESHOLD_SUFFIX,
    VAL_THRESHOLDS,
    plots_dir,
    predictions_csv,
    write_json,
)

_STARTED = time.strftime("%Y%m%d-%H%M%S")


def keep_previous(path: Path) -> None:
    """A file about to be rewritten (a resumed run tested again) is kept as ``<stem>.<time of this
    process's start><suffix>``: one timestamp for everything one run sets aside."""
    if path.exists():
        path.rename(path.with_name(f"{path.stem}.{_STARTED}{path.suffix}"))


def safe_filename(name: str) -> str:
    """A label name usable as a file name ('ich/sah' -> 'ich_sah')."""
    return re.sub(r"[^\w.-]+", "_", name)


class CollectingEvaluator(pl.Callback):
    """Collects ``test_step`` outputs of every test dataloader; subclasses score them in ``evaluate``.

    Under DDP the outputs of all ranks are gathered and de-duplicated by dataset index
    (DistributedSampler pads) so that rank 0 scores every test item exactly once.
    """

    def __init__(
        self,
        output_dir: str,
        threshold: float | str = 0.5,
        n_bootstrap: int = 1000,
        ci: float = 0.95,
        seed: int = 0,
    ) -> None:
        self.output_dir = Path(output_dir)
        # ``model.threshold=validation`` reaches here through ``${model.threshold}``: the metrics at 0.5
        # stay the reference, those at the chosen thresholds come from the model (``<set>@val_threshold``)
        self.threshold = 0.5 if str(threshold).strip().lower() == "validation" else float(threshold)
        self.n_bootstrap = n_bootstrap
        self.ci = ci
        self.seed = seed
        self._buffers: dict[int, list[dict[str, torch.Tensor]]] = {}
        self.metrics: dict[str, Any] = {}

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._buffers = {}

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        kept = {k: v.detach() for k, v in outputs.items() if not k.startswith("_")}  # "_": per-batch only
        self._buffers.setdefault(dataloader_idx, []).append(kept)

    def _gathered(self, pl_module: pl.LightningModule, idx: int) -> dict[str, np.ndarray]:
        parts = self._buffers.get(idx, [])
        local = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
        if pl_module.trainer.world_size > 1:
            local = {k: pl_module.all_gather(v).flatten(0, 1) for k, v in local.items()}
        index = local["index"].cpu().numpy()
        _, first = np.unique(index, return_index=True)
        return {k: v.cpu().numpy()[first] for k, v in local.items()}

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        names = trainer.datamodule.test_set_names
        gathered = {name: self._gathered(pl_module, i) for i, name in enumerate(names)}
        if trainer.is_global_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.metrics = self.evaluate(trainer, pl_module, gathered)
            path = self.output_dir / METRICS_JSON
            keep_previous(path)
            write_json(path, self.metrics)
            flat = {
                f"test/{name}/{label}/{metric}": fields["value"]
                for name, per_label in self.metrics.items()
                for label, per_metric in per_label.items()
                for metric, fields in per_metric.items()
            }
            for logger in trainer.loggers:
                logger.log_metrics(flat, step=trainer.global_step)

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, gathered: dict[str, dict[str, np.ndarray]]
    ) -> dict[str, Any]:
        raise NotImplementedError

    def headline(self) -> dict[str, Any]:
        """The metrics printed at the end of a run (all of them unless a subclass picks)."""
        return self.metrics

    def bootstrap(
        self,
        y: np.ndarray,
        p: np.ndarray,
        patients: np.ndarray,
        threshold: float | None = None,
        metrics: Sequence[str] = METRICS,
    ) -> dict[str, dict[str, float]]:
        """``metrics`` (default all) with their patient-bootstrap CIs, plus ``n`` and ``n_positive``."""
        res = patient_bootstrap_ci(
            y.astype(int),
            p,
            patients,
            threshold=self.threshold if threshold is None else threshold,
            n_bootstrap=self.n_bootstrap,
            ci=self.ci,
            seed=self.seed,
            metrics=metrics,
        )
        res["n"] = {"value": int(len(y))}
        res["n_positive"] = {"value": int(y.sum())}
        return res

    def plot_curves(
        self, trainer: pl.Trainer, figures: dict[str, tuple[dict, str]], holdout: str | None = None
    ) -> None:
        """One ROC figure per ``{file name: (curves, title)}`` under ``plots/``, logged as images; a
        hold-out test set's figures get its name in the file name (``<stem>_<holdout>.png``) and title."""
        for fname, (curves, title) in figures.items():
            if holdout is not None:
                fname, title = f"{fname.removesuffix('.png')}_{holdout}.png", f"{title}, {holdout}"
            if curves:
                png = plots_dir(self.output_dir) / fname
                keep_previous(png)
                plot_roc(curves, png, title=title)
                log_image(trainer, f"roc/{fname.removesuffix('.png')}", png)

    def plot_label_figures(
        self, trainer: pl.Trainer, label: str, curves: dict[str, tuple], roc: bool = True
    ) -> None:
        """ROC (unless ``roc=False``: a component that draws its own), precision-recall and reliability
        figures of one label over the test sets, from ``curves``: ``{set: (y, p, metrics of that set
        and label)}`` (sets with both classes for ROC and PR; every set for the reliability diagram,
        which needs no negatives)."""
        both = {n: c for n, c in curves.items() if 0 < c[0].sum() < len(c[0])}
        figures = {
            ROC_PLOT_PREFIX: (plot_roc, both if roc else {}, "auroc", "ROC"),
            PR_PLOT_PREFIX: (plot_precision_recall, both, "average_precision", "Precision-recall"),
        }
        for prefix, (plot, chosen, metric, what) in figures.items():
            if chosen:
                png = plots_dir(self.output_dir) / f"{prefix}{safe_filename(label)}.png"
                keep_previous(png)
                plot(
                    {
                        n: (y, p, r[metric]["value"], r[metric]["ci_low"], r[metric]["ci_high"])
                        for n, (y, p, r) in chosen.items()
                    },
                    png,
                    title=f"{what}: {label}",
                )
                log_image(trainer, f"{prefix.rstrip('_')}/{label}", png)
        if curves:
            png = plots_dir(self.output_dir) / f"{CALIBRATION_PLOT_PREFIX}{safe_filename(label)}.png"
            keep_previous(png)
            plot_reliability(
                {n: (y, p, r["ece"]["value"], r["brier"]["value"]) for n, (y, p, r) in curves.items()},
                png,
                title=f"Reliability: {label}",
                n_bins=ECE_BINS,
            )
            log_image(trainer, f"calibration/{label}", png)

    def write_val_thresholds(self, pl_module: pl.LightningModule) -> dict[str, dict[str, Any]]:
        """The per-label thresholds the model chose on validation (``model.threshold=validation``),
        written to ``val_thresholds.json``; ``{}`` (and no file) with a fixed threshold."""
        chosen = dict(getattr(pl_module, "label_thresholds", None) or {})
        if getattr(pl_module, "choose_on_validation", False) and not chosen:
            rank_zero_warn(
                "[reportsup] model.threshold=validation, but the tested weights carry no thresholds chosen "
                "on validation (no validation epoch ran, or the checkpoint was written with a fixed "
                "threshold): only the metrics at 0.5 are reported. Train with model.threshold=validation."
            )
        manifest_file = self.output_dir / LABEL_MANIFEST
        if chosen and manifest_file.is_file() and hasattr(pl_module, "label_manifest"):
            # the run's label_manifest.json is written before training, when no threshold is chosen yet:
            # it gets those of the tested weights, as their checkpoint's manifest has them
            on_file = json.loads(manifest_file.read_text())
            tested = pl_module.label_manifest()
            on_file.update({k: tested[k] for k in ("thresholds", "threshold_choice") if k in tested})
            write_json(manifest_file, on_file)
        if chosen:
            path = self.output_dir / VAL_THRESHOLDS
            keep_previous(path)
            write_json(
                path,
                {
                    "set": "validation",
                    "rule": getattr(pl_module, "threshold_rule", "youden"),
                    "thresholds": chosen,
                },
            )
        return chosen

    def write_predictions(self, trainer: pl.Trainer, name: str, table: pd.DataFrame) -> None:
        path = self.output_dir / predictions_csv(name)
        keep_previous(path)
        table.to_csv(path, index=False)
        log_table(trainer, f"predictions/{name}", table)


class TestSetEvaluator(CollectingEvaluator):
    """Per test set and label: metrics with patient-bootstrap CIs, predictions and ROC plots (ALARM).

    With ``confusion_matrix`` also the TP/TN/FP/FN counts in ``metrics.json`` and a confusion-matrix PNG
    per test set and label (spine study, Tables 1-3 and Figures 3-4).
    """

    def __init__(self, *args: Any, confusion_matrix: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.confusion_matrix = confusion_matrix

    def score(
        self,
        trainer: pl.Trainer,
        name: str,
        label: str,
        y: np.ndarray,
        p: np.ndarray,
        patients: np.ndarray,
        threshold: float | None = None,
    ) -> dict[str, Any]:
        """Metrics of one label on one test set (known targets only) at ``threshold`` (default
        ``self.threshold``); ``name`` also names the confusion-matrix file."""
        threshold = self.threshold if threshold is None else threshold
        res = self.bootstrap(y, p, patients, threshold)
        if self.confusion_matrix:
            counts = confusion_counts(y, p, threshold)
            res.update({k: {"value": v} for k, v in counts.items()})
            png = plots_dir(self.output_dir) / f"confusion_{safe_filename(name)}_{safe_filename(label)}.png"
            keep_previous(png)
            plot_confusion(counts, png, title=f"{label} ({name}, cut-off {threshold:.3g})")
            log_image(trainer, f"confusion/{name}/{label}", png)
        return res

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, gathered: dict[str, dict[str, np.ndarray]]
    ) -> dict[str, Any]:
        labels: list[str] = list(pl_module.labels)
        chosen = self.write_val_thresholds(pl_module)
        metrics: dict[str, Any] = {}
        curves: dict[str, dict[str, tuple]] = {lb: {} for lb in labels}
        for name, g in gathered.items():
            table = trainer.datamodule.test_table(name).iloc[g["index"]]
            id_column = getattr(trainer.datamodule, "id_column", "report_id")  # session_id for images
            pred = pd.DataFrame(
                {"id": table[id_column].to_numpy(), "patient_id": table["patient_id"].to_numpy()}
            )
            metrics[name] = {}
            for j, label in enumerate(labels):
                y, p = g["targets"][:, j], g["probs"][:, j]
                pred[f"{label}_true"] = pd.array(np.where(np.isnan(y), pd.NA, y), dtype="Int64")
                pred[f"{label}_prob"] = p
                known = ~np.isnan(y)
                if not known.any():
                    continue
                patients = pred["patient_id"].to_numpy()[known]
                res = self.score(trainer, name, label, y[known], p[known], patients)
                metrics[name][label] = res
                curves[label][name] = (y[known].astype(int), p[known], res)
                if label in chosen:
                    at = self.score(
                        trainer,
                        f"{name}{VAL_THRESHOLD_SUFFIX}",
                        label,
                        y[known],
                        p[known],
                        patients,
                        chosen[label]["threshold"],
                    )
                    # the threshold-free metrics (AUROC, AP, ECE, Brier) are the same as at 0.5: not repeated
                    at = {k: v for k, v in at.items() if k not in THRESHOLD_FREE}
                    at["threshold"] = {"value": float(chosen[label]["threshold"])}
                    metrics.setdefault(f"{name}{VAL_THRESHOLD_SUFFIX}", {})[label] = at
            self.write_predictions(trainer, name, pred)
        for label, per_set in curves.items():
            self.plot_label_figures(trainer, label, per_set)
        return metrics


def log_table(trainer: pl.Trainer, key: str, table: pd.DataFrame) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, dataframe=table)


def log_image(trainer: pl.Trainer, key: str, png: Path) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(png)])
