"""Evaluation of the spine image models (spine study, "Data Analysis", Tables 2-3, Figures 4-6).

:class:`SpineEvaluator`: the shared per-finding metrics with confusion matrices at the 0.5 threshold
(Table 2), then each finding's cut-off re-optimised with Youden's J on the refinement set's outputs
and applied to the other test sets (Table 3), reported beside the 0.5 results as ``<set>@youden``.
The cut-offs come from the one threshold chooser every component shares
(:func:`reportsup.analysis.youden.choose_threshold`, issue 22 item 3); ``model.threshold=validation``
adds ``<set>@val_threshold`` (thresholds chosen on the validation split) as for the other models.
:class:`OcclusionMaps`: occlusion sensitivity maps of chosen test cases (Figure 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from lightning_modules.common.evaluation import TestSetEvaluator, keep_previous, log_image, safe_filename
from lightning_modules.common.occlusion import occlusion_maps
from reportsup.analysis.plots import plot_occlusion
from reportsup.analysis.youden import strict_threshold, youden_cutoff
from reportsup.contracts.run_dir import (
    OCCLUSION,
    YOUDEN_CUTOFFS,
    plots_dir,
    predictions_csv,
    read_predictions,
    write_json,
)

__all__ = [
    "OcclusionMaps",
    "SpineEvaluator",
    "strict_threshold",
]  # strict_threshold: reportsup.analysis.youden


class SpineEvaluator(TestSetEvaluator):
    """Metrics at 0.5 and at Youden cut-offs from ``cutoff_set`` (default: the refinement set)."""

    def __init__(
        self, *args: Any, cutoff_set: str = "refinement", confusion_matrix: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, confusion_matrix=confusion_matrix, **kwargs)
        self.cutoff_set = cutoff_set
        self.cutoffs: dict[str, dict[str, float]] = {}

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, gathered: dict[str, dict[str, np.ndarray]]
    ) -> dict[str, Any]:
        metrics = super().evaluate(trainer, pl_module, gathered)
        if self.cutoff_set not in gathered:
            rank_zero_info(f"[reportsup] no '{self.cutoff_set}' test set: Youden cut-offs are not computed.")
            return metrics
        labels = list(pl_module.labels)
        ref = gathered[self.cutoff_set]
        self.cutoffs = {}
        for j, label in enumerate(labels):
            y, p = ref["targets"][:, j], ref["probs"][:, j]
            known = ~np.isnan(y)
            try:
                self.cutoffs[label] = youden_cutoff(y[known], p[known])
            except ValueError as err:
                rank_zero_info(f"[reportsup] {label}: no Youden cut-off on '{self.cutoff_set}' ({err}).")
        path = self.output_dir / YOUDEN_CUTOFFS
        keep_previous(path)
        write_json(path, {"cutoff_set": self.cutoff_set, "cutoffs": self.cutoffs})
        for name, g in gathered.items():
            if name == self.cutoff_set:
                continue
            patients = trainer.datamodule.test_table(name).iloc[g["index"]]["patient_id"].to_numpy()
            for j, label in enumerate(labels):
                if label not in self.cutoffs:
                    continue
                y, p = g["targets"][:, j], g["probs"][:, j]
                known = ~np.isnan(y)
                if not known.any():
                    continue
                cutoff = self.cutoffs[label]["cutoff"]
                res = self.score(
                    trainer,
                    f"{name}@youden",
                    label,
                    y[known],
                    p[known],
                    patients[known],
                    strict_threshold(cutoff),
                )
                res["cutoff"] = {"value": cutoff}
                metrics.setdefault(f"{name}@youden", {})[label] = res
        return metrics


class OcclusionMaps(pl.Callback):
    """After testing: occlusion maps (coronal and sagittal apart) for chosen sessions of ``test_set``, or
    for each finding's ``n_per_finding`` most confident true positives (the paper's Figure 6 shows true
    positives), as ``plots/occlusion/<finding>_<session>.png``. Needs the evaluator's predictions file."""

    def __init__(
        self,
        output_dir: str,
        test_set: str = "image_test",
        sessions: Sequence[str] | None = None,
        n_per_finding: int = 2,
        patch: int = 80,
        stride: int = 20,
        perturbations_per_eval: int = 32,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.test_set = test_set
        self.sessions = [str(s) for s in sessions] if sessions else None
        self.n_per_finding = n_per_finding
        self.patch = patch
        self.stride = stride
        self.perturbations_per_eval = perturbations_per_eval
        self.written: list[Path] = []

    def _cases(self, pred: pd.DataFrame, label: str) -> list[str]:
        if self.sessions is not None:
            return self.sessions
        true_pos = pred.loc[pred[f"{label}_true"] == 1].sort_values(f"{label}_prob", ascending=False)
        return true_pos["id"].astype(str).head(self.n_per_finding).tolist()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.n_per_finding <= 0 and self.sessions is None:
            return
        dm = trainer.datamodule
        if (
            self.test_set not in dm.test_set_names
            or not (self.output_dir / predictions_csv(self.test_set)).exists()
        ):
            rank_zero_info(f"[reportsup] occlusion maps: no predictions for '{self.test_set}'.")
            return
        pred = read_predictions(self.output_dir, self.test_set)
        dataset = dm.datasets[self.test_set]
        position = {sid: i for i, sid in enumerate(dataset.table["session_id"].astype(str))}
        unknown = [s for s in self.sessions or [] if s not in position]
        if unknown:
            raise ValueError(
                f"callbacks.occlusion.sessions: {unknown} are not in the '{self.test_set}' test set."
            )
        baseline = [float(-m / s) for m, s in zip(dataset.normalize.mean, dataset.normalize.std, strict=True)]
        device = pl_module.device
        pl_module.eval()
        # A smoke run (``debug=fast_dev_run``) checks that maps are made; one map shows that, twelve
        # take ~30 s on a CPU. Real runs draw every finding's.
        smoke = bool(trainer.fast_dev_run)
        findings = list(enumerate(pl_module.labels))
        for j, label in findings[:1] if smoke else findings:
            for sid in self._cases(pred, label)[:1] if smoke else self._cases(pred, label):
                i = position[sid]
                maps = occlusion_maps(
                    pl_module.to(device),
                    dataset[i]["image"].to(device),
                    j,
                    self.patch,
                    self.stride,
                    baseline,
                    self.perturbations_per_eval,
                )
                prob = float(pred.loc[pred["id"] == sid, f"{label}_prob"].iloc[0])
                png = (
                    plots_dir(self.output_dir)
                    / OCCLUSION
                    / f"{safe_filename(label)}_{safe_filename(sid)}.png"
                )
                keep_previous(png)
                plot_occlusion(
                    dataset.fused(i).numpy(), maps, png, title=f"{label}: session {sid}, p = {prob:.2f}"
                )
                log_image(trainer, f"occlusion/{label}", png)
                self.written.append(png)
        rank_zero_info(
            f"[reportsup] occlusion maps: {len(self.written)} written to {plots_dir(self.output_dir) / OCCLUSION}"
            + (" (fast_dev_run: the first finding's only)" if smoke else "")
        )
