"""Evaluation of the Cross-DL discretizer (Liu et al. 2023, Fig. 2B-D; STAR Methods "Quantification").

* ``sentence`` test set: per region and per type, F1 (and the other binary metrics) at 0.5 with a
  patient-bootstrap 95 % CI (Fig. 2B), plus micro-averages over regions, types and all labels.
* ``report`` test set: sentence probabilities are max-merged into soft report matrices and compared
  with the gold matrices: per type, AUROC micro-averaged over the 17 anatomical regions (Fig. 2C);
  per region with left/right merged, micro-averaged over the 4 types (Fig. 2D); scan-level per type
  (union over all regions incl. other/unclear); and all 17 x 4 cells micro-averaged. "Micro" as in
  the paper: the ground truths and predictions of the group are pooled into one ROC curve.

Every entry also has the issue 22 item 2 metrics (average precision, PPV, NPV, ECE, Brier score) with
their CIs, and each scan-level type its ROC, precision-recall and reliability figures
(``plots/{roc,pr,calibration}_scan_<type>.png``, all report-level sets in one figure). With
``model.threshold=validation`` (issue 22 item 3) the sentence labels are scored again at the thresholds
chosen on the validation sentences (``sentence@val_threshold``), and the scan-level types at their
type's threshold (``<report set>@val_threshold``): a max-merged report exceeds a threshold exactly
when one of its sentences does, so the sentence threshold carries over.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd

from lightning_modules.common.evaluation import CollectingEvaluator
from reportsup.analysis.matrix_metrics import score_matrices
from reportsup.analysis.metrics import THRESHOLD_FREE
from reportsup.contracts.labels.crossdl import LabelSpace, report_matrices
from reportsup.contracts.run_dir import VAL_THRESHOLD_SUFFIX


class DiscretizerEvaluator(CollectingEvaluator):
    """Scores the ``sentence`` and ``report`` test sets of :class:`ReportSentenceDataModule`, and its
    hold-outs (``data.holdouts``) as ``report``."""

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, gathered: dict[str, dict[str, np.ndarray]]
    ) -> dict[str, Any]:
        space: LabelSpace = pl_module.space
        self.chosen = self.write_val_thresholds(pl_module)
        self.chosen_scan: dict[str, dict[str, Any]] = {}
        self.scan_curves: dict[str, dict[str, tuple]] = {}
        metrics: dict[str, Any] = {}
        if "sentence" in gathered:
            metrics["sentence"] = self._sentences(
                trainer, pl_module.labels, len(space.regions), gathered["sentence"]
            )
            if self.chosen:
                metrics[f"sentence{VAL_THRESHOLD_SUFFIX}"] = self._at_chosen(
                    trainer, pl_module.labels, gathered["sentence"]
                )
        for name in trainer.datamodule.report_level_sets:  # "report" and every hold-out
            if name in gathered:
                metrics[name] = self._reports(trainer, space, name, gathered[name])
                if self.chosen_scan.get(name):
                    metrics[f"{name}{VAL_THRESHOLD_SUFFIX}"] = self.chosen_scan[name]
        for label, per_set in self.scan_curves.items():
            self.plot_label_figures(trainer, label, per_set)
        return metrics

    def _at_threshold(self, y: np.ndarray, p: np.ndarray, patients: np.ndarray, threshold: float) -> dict:
        """The threshold-dependent metrics at a chosen threshold (the others do not change)."""
        res = self.bootstrap(y, p, patients, threshold)
        out = {k: v for k, v in res.items() if k not in THRESHOLD_FREE}
        out["threshold"] = {"value": float(threshold)}
        return out

    def _at_chosen(self, trainer: pl.Trainer, labels: list[str], g: dict[str, np.ndarray]) -> dict:
        """Each sentence label at its threshold chosen on the validation sentences."""
        patients = trainer.datamodule.test_table("sentence").iloc[g["index"]]["patient_id"].to_numpy()
        out = {}
        for j, label in enumerate(labels):
            y, p = g["targets"][:, j], g["probs"][:, j]
            known = ~np.isnan(y)
            if label in self.chosen and known.any():
                out[label] = self._at_threshold(
                    y[known], p[known], patients[known], self.chosen[label]["threshold"]
                )
        return out

    def headline(self) -> dict[str, Any]:
        keep = ("micro", "micro_regions", "micro_types", "type:", "scan:")
        return {
            name: {
                label: {
                    m: f
                    for m, f in per_metric.items()
                    if m in ("f1", "auroc", "average_precision", "ece", "threshold", "n", "n_positive")
                }
                for label, per_metric in per_label.items()
                if label.startswith(keep)
            }
            for name, per_label in self.metrics.items()
        }

    def _sentences(
        self, trainer: pl.Trainer, labels: list[str], n_regions: int, g: dict[str, np.ndarray]
    ) -> dict:
        table = trainer.datamodule.test_table("sentence").iloc[g["index"]]
        patients = table["patient_id"].to_numpy()
        y, p = g["targets"], g["probs"]
        out = {}
        groups = {
            **{lb: [j] for j, lb in enumerate(labels)},
            "micro_regions": list(range(n_regions)),
            "micro_types": list(range(n_regions, len(labels))),
            "micro": list(range(len(labels))),
        }
        for name, cols in groups.items():
            yy, pp = y[:, cols].ravel(), p[:, cols].ravel()
            pat = np.repeat(patients, len(cols))
            known = ~np.isnan(yy)
            if known.any():
                out[name] = self.bootstrap(yy[known], pp[known], pat[known])
        pred = pd.DataFrame(
            {"id": table["sentence_id"].to_numpy(), "patient_id": patients, "text": table["text"].to_numpy()}
        )
        for j, lb in enumerate(labels):
            pred[f"{lb}_true"], pred[f"{lb}_prob"] = y[:, j], p[:, j]
        self.write_predictions(trainer, "sentence", pred)
        return out

    def _reports(self, trainer: pl.Trainer, space: LabelSpace, name: str, g: dict[str, np.ndarray]) -> dict:
        sentences = trainer.datamodule.test_table(name).iloc[g["index"]]
        gold_table = trainer.datamodule.gold_table(name)
        n_r, n_t = len(space.regions), len(space.types)
        soft = report_matrices(
            sentences["report_index"].to_numpy(),
            g["probs"][:, :n_r],
            g["probs"][:, n_r:],
            len(gold_table),
            threshold=None,
        )
        # Reports without Findings (listed in reports_without_findings.csv) are not scored.
        scored = np.isin(np.arange(len(gold_table)), sentences["report_index"].to_numpy())
        gold = gold_table[space.matrix_columns()].to_numpy(dtype=float).reshape(-1, n_r, n_t)[scored]
        soft, patients = soft[scored], gold_table["patient_id"].to_numpy()[scored]
        out, curves = score_matrices(gold, soft, patients, space, self.bootstrap)
        for j, t in enumerate(space.types):  # scan level: union over every region incl. other/unclear
            yy, pp = gold[:, :, j].max(1), soft[:, :, j].max(1)
            if 0 < yy.sum() < len(yy):
                out[f"scan:{t}"] = self.bootstrap(yy, pp, patients)
                self.scan_curves.setdefault(f"scan:{t}", {})[name] = (yy.astype(int), pp, out[f"scan:{t}"])
                if t in self.chosen:
                    self.chosen_scan.setdefault(name, {})[f"scan:{t}"] = self._at_threshold(
                        yy, pp, patients, self.chosen[t]["threshold"]
                    )
        self.plot_curves(
            trainer,
            {
                "roc_report_types.png": (curves.get("type", {}), "Report level: types (Fig. 2C)"),
                "roc_report_regions.png": (curves.get("region", {}), "Report level: regions (Fig. 2D)"),
            },
            holdout=None if name == "report" else name,
        )
        pred = pd.DataFrame({"id": gold_table["report_id"].to_numpy()[scored], "patient_id": patients})
        cells = pd.DataFrame(
            soft.reshape(len(soft), -1), columns=[f"{c}_prob" for c in space.matrix_columns()]
        )
        self.write_predictions(trainer, name, pd.concat([pred, cells], axis=1))
        return out
