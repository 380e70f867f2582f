"""Evaluation of the Cross-DL discretizer (Liu et al. 2023, Fig. 2B-D; STAR Methods "Quantification").

* ``sentence`` test set: per region and per type, F1 (and the other binary metrics) at 0.5 with a
  patient-bootstrap 95 % CI (Fig. 2B), plus micro-averages over regions, types and all labels.
* ``report`` test set: sentence probabilities are max-merged into soft report matrices and compared
  with the gold matrices: per type, AUROC micro-averaged over the 17 anatomical regions (Fig. 2C);
  per region with left/right merged, micro-averaged over the 4 types (Fig. 2D); scan-level per type
  (union over all regions incl. other/unclear); and all 17 x 4 cells micro-averaged. "Micro" as in
  the paper: the ground truths and predictions of the group are pooled into one ROC curve.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd

from lightning_modules.common.evaluation import CollectingEvaluator
from reportsup.analysis.matrix_metrics import score_matrices
from reportsup.contracts.labels.crossdl import LabelSpace, report_matrices


class DiscretizerEvaluator(CollectingEvaluator):
    """Scores the ``sentence`` and ``report`` test sets of :class:`ReportSentenceDataModule`, and its
    hold-outs (``data.holdouts``) as ``report``."""

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, gathered: dict[str, dict[str, np.ndarray]]
    ) -> dict[str, Any]:
        space: LabelSpace = pl_module.space
        metrics: dict[str, Any] = {}
        if "sentence" in gathered:
            metrics["sentence"] = self._sentences(
                trainer, pl_module.labels, len(space.regions), gathered["sentence"]
            )
        for name in trainer.datamodule.report_level_sets:  # "report" and every hold-out
            if name in gathered:
                metrics[name] = self._reports(trainer, space, name, gathered[name])
        return metrics

    def headline(self) -> dict[str, Any]:
        keep = ("micro", "micro_regions", "micro_types", "type:", "scan:")
        return {
            name: {
                label: {m: f for m, f in per_metric.items() if m in ("f1", "auroc", "n", "n_positive")}
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
