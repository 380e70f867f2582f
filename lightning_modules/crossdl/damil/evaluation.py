"""Evaluation of the DaMIL analyzer (Liu et al. 2023, "Quantification and statistical analysis",
Figs. 3-5, Table S6):

* AUROC of every region x type cell (Table S6); per type micro-averaged over the 17 regions; per region
  (left/right merged) micro-averaged over the 4 types; all cells (:mod:`reportsup.analysis.matrix_metrics`);
* weighted-macro AUROC (Tables S6/S7, "Weighted macro": the cells' AUROCs weighted by their positive
  counts): per type over the 17 regions (``weighted_macro:<type>``), over all 17 x 4 cells
  (``weighted_macro``) and over the 4 scan-level types (``scan_weighted_macro``);
* scan-level AUROC per type (scan score = maximum of the abnormality map; label = union over all
  regions incl. other/unclear);
* 95 % CIs by bootstrap resampling scans (n = 1000 by default), weighted macros recomputed per replicate;
* localisation: mean Dice of the thresholded abnormality maps against voxel masks, per type, only on
  scans that have that type (the paper's 40 annotated scans; here every phantom has voxel ground truth),
  with a 95 % bootstrap CI over those scans (the paper gives CIs for its Dice, "The image analyzer
  accurately classified and localized abnormalities", and for the GradCAM Dice, "Ablation study"; none
  below 2 scans, ``ci_note`` says so), the threshold
  used and where it came from (:mod:`~lightning_modules.crossdl.damil.dice_threshold`);
* CQ500 (Figure 6; a hold-out of ``HeadCTDataModule.cq500_sets``, e.g. ``experiment=damil_cq500``):
  AUROC with a bootstrap 95 % CI for intracranial, intraparenchymal, extraparenchymal, left and right
  haemorrhage, each scored from the maxima of the hyperdensity maps
  (:func:`~datamodules.crossdl.head_ct.cq500.cq500_scores`) against the readers' majority
  (:func:`~datamodules.crossdl.head_ct.cq500.cq500_truth`), and their ROC curves (Figure 6B);
* prioritization: a one-sided Wilcoxon rank-sum test that scans with an abnormality score higher than
  scans without, per type and for "any" (Figure 5, S5; :mod:`reportsup.analysis.prioritization`, whose
  ``reportsup-prioritization`` ranks a disease table as the paper's Figure 5).

Region-level metrics leave out scans whose ``unclear`` label is positive (their region labels are
incomplete; the released code skips them too); the scan-level metrics keep them.

Issue 22 item 2: the scan-level types (``scan:<type>``) and CQ500 labels also get average precision,
PPV, NPV, the expected calibration error and the Brier score with their CIs, and PR and reliability
figures (``plots/{pr,calibration}_scan_<type>.png``, every test set in one figure); the 68 region x type
cells and their micro-averages keep the paper's metrics (:data:`~reportsup.analysis.metrics.PAPER_METRICS`):
the additions would triple their bootstrap time.

Issue 22 item 3: with ``model.decision_threshold=validation`` (DaMIL's ``model.threshold`` is the
paper's *t* of the top-k count) every output column has its threshold chosen on the validation scans
(:class:`~lightning_modules.crossdl.damil.module.ScanModelSteps`); each test set's scan-level types are
scored again at them as ``<set>@val_threshold`` (the thresholds in ``val_thresholds.json``). The cells'
thresholds travel with the checkpoint for ``reportsup-damil-predict``; their metrics stay at 0.5 (the
paper's micro-averages pool all cells at one threshold). The map threshold of the localisation Dice is
a separate choice (``model.dice_threshold``).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd

from datamodules.crossdl.head_ct.cq500 import CQ500_LABELS, cq500_scores, cq500_truth
from lightning_modules.common.evaluation import CollectingEvaluator
from lightning_modules.crossdl.damil.dice_threshold import binned_auroc
from reportsup.analysis.matrix_metrics import score_matrices, score_weighted_macro, weighted_macro_metrics
from reportsup.analysis.metrics import PAPER_METRICS, THRESHOLD_FREE, mean_with_ci
from reportsup.analysis.prioritization import prioritization
from reportsup.contracts.run_dir import VAL_THRESHOLD_SUFFIX

log = logging.getLogger(__name__)


class DaMILEvaluator(CollectingEvaluator):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # scan:<type> -> test set -> (y, p, metrics), filled by score_set for the PR / reliability figures
        self.scan_curves: dict[str, dict[str, tuple]] = {}
        # model.decision_threshold=validation: the chosen thresholds, and the metrics at them per set
        self.chosen: dict[str, dict[str, Any]] = {}
        self.at_chosen: dict[str, dict[str, Any]] = {}

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, gathered: dict[str, dict[str, np.ndarray]]
    ) -> dict[str, Any]:
        """Every test set: the internal ``test`` split and each hold-out (``data.holdouts``); CQ500
        hold-outs by their five haemorrhage labels (:meth:`score_cq500`)."""
        cq500 = getattr(trainer.datamodule, "cq500_sets", set())
        self.scan_curves = {}  # this test run's figures only
        # model.decision_threshold=validation: the scan-level metrics again at the chosen thresholds
        self.chosen = self.write_val_thresholds(pl_module)
        self.at_chosen: dict[str, dict[str, Any]] = {}
        metrics = {
            name: (self.score_cq500 if name in cq500 else self.score_set)(trainer, pl_module, name, g)
            for name, g in gathered.items()
        }
        metrics.update(self.at_chosen)
        for label, per_set in self.scan_curves.items():  # ROC stays in roc_damil_scan*.png
            self.plot_label_figures(trainer, label, per_set, roc=False)
        return metrics

    def score_cq500(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str, g: dict[str, np.ndarray]
    ) -> dict[str, Any]:
        """Figure 6: per haemorrhage label, AUROC with a bootstrap CI over scans (``cq500:<label>``), the
        ROC curves (``plots/roc_damil_haemorrhage_<name>.png``) and ``predictions_<name>.csv``. A label
        with one class only on this set gets its counts and no AUROC (logged)."""
        space = pl_module.space
        n_r, n_t = pl_module.n_regions, pl_module.n_types
        if "region_max" not in g:
            raise ValueError(
                f"test set {name!r} is a CQ500 set: its left/right scores need the region-restricted maxima "
                f"max_v S_iv D_jv, which {type(pl_module).__name__} does not give (DaMILModule does)."
            )
        table = trainer.datamodule.test_table(name).iloc[g["index"]].reset_index(drop=True)
        scans = table["scan_id"].to_numpy()
        n = len(scans)
        truth = cq500_truth(table)
        scores = cq500_scores(g["probs"][:, n_r * n_t :], g["region_max"].reshape(n, n_r, n_t), space)
        out: dict[str, Any] = {}
        curves: dict[str, tuple] = {}
        for label in CQ500_LABELS:
            y, p = truth[label].to_numpy(), scores[label].to_numpy()
            if not 0 < y.sum() < n:
                log.warning(
                    "CQ500 set %r: %s has %d of %d scans positive: no AUROC.", name, label, y.sum(), n
                )
                out[f"cq500:{label}"] = {"n": {"value": n}, "n_positive": {"value": int(y.sum())}}
                continue
            res = out[f"cq500:{label}"] = self.bootstrap(y, p, scans)
            auroc = res["auroc"]
            curves[label] = (y, p, auroc["value"], auroc["ci_low"], auroc["ci_high"])
        self.plot_curves(
            trainer, {"roc_damil_haemorrhage.png": (curves, "CQ500 haemorrhage (Fig. 6B)")}, holdout=name
        )
        pred = table[["scan_id", "patient_id"]].copy()
        for label in CQ500_LABELS:
            pred[f"{label}_prob"], pred[f"{label}_true"] = scores[label].to_numpy(), truth[label].to_numpy()
        self.write_predictions(trainer, name, pred)
        return out

    def voxel_auroc(self, hist: np.ndarray, scans: np.ndarray) -> dict[str, Any] | None:
        """Voxel-level AUROC inside the head of one type's maps over the scans with voxel masks
        (``hist``: (n, 2, bins) from :func:`~lightning_modules.crossdl.damil.dice_threshold.voxel_histograms`),
        with a bootstrap CI over scans; ``None`` when no scan has lesion voxels of the type. Next to the
        Dice at a threshold it tells whether the maps rank lesion voxels well (issue 20's diagnosis)."""
        finite = np.isfinite(hist).all(axis=(1, 2))
        hist, scans = hist[finite], scans[finite]
        if not len(hist) or hist[:, 1].sum() == 0:
            return None
        value = binned_auroc(hist.sum(0))
        rng = np.random.default_rng(self.seed)
        replicates = [
            binned_auroc(hist[rng.integers(0, len(hist), len(hist))].sum(0)) for _ in range(self.n_bootstrap)
        ]
        replicates = np.asarray([r for r in replicates if np.isfinite(r)])
        alpha = (1 - self.ci) / 2
        low, high = np.quantile(replicates, [alpha, 1 - alpha]) if len(replicates) else (np.nan, np.nan)
        return {
            "auroc": {
                "value": value,
                "ci_low": float(low),
                "ci_high": float(high),
                "n_bootstrap_valid": len(replicates),
            },
            "n_scans": {"value": int(len(hist))},
            "n_positive_voxels": {"value": int(hist[:, 1].sum())},
        }

    def score_set(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str, g: dict[str, np.ndarray]
    ) -> dict[str, Any]:
        space = pl_module.space
        n_r, n_t = pl_module.n_regions, pl_module.n_types
        table = trainer.datamodule.test_table(name).iloc[g["index"]].reset_index(drop=True)
        scans = table["scan_id"].to_numpy()
        n = len(scans)
        region_p = g["probs"][:, : n_r * n_t].reshape(n, n_r, n_t)
        region_y = g["targets"][:, : n_r * n_t].reshape(n, n_r, n_t)
        scan_p, scan_y = g["probs"][:, n_r * n_t :], g["targets"][:, n_r * n_t :]
        clear = g["unclear"] < 0.5
        thresholds = (
            pl_module.dice_thresholds
        )  # set at test start (lightning_modules.crossdl.damil.dice_threshold)
        # Full label-space rows (other/unclear have no region prediction: NaN, never scored).
        rows = [space.regions.index(r) for r in space.anatomical_regions]
        gold = np.full((n, len(space.regions), n_t), np.nan)
        prob = np.zeros((n, len(space.regions), n_t))
        gold[:, rows], prob[:, rows] = region_y, region_p
        out, curves = score_matrices(
            gold[clear],
            prob[clear],
            scans[clear],
            space,
            partial(self.bootstrap, metrics=PAPER_METRICS),
            cells=True,
        )
        resampling = {"n_bootstrap": self.n_bootstrap, "ci": self.ci, "seed": self.seed}
        out.update(score_weighted_macro(gold[clear], prob[clear], scans[clear], space, **resampling))
        scan_macro = weighted_macro_metrics(scan_y, scan_p, scans, **resampling)
        if scan_macro is not None:
            out["scan_weighted_macro"] = scan_macro
        for j, t in enumerate(space.types):
            if 0 < scan_y[:, j].sum() < n:
                out[f"scan:{t}"] = self.bootstrap(scan_y[:, j], scan_p[:, j], scans)
                if (chosen := self.chosen.get(f"scan__{t}")) is not None:
                    at = self.bootstrap(scan_y[:, j], scan_p[:, j], scans, chosen["threshold"])
                    # the threshold-free metrics (AUROC, AP, ECE, Brier) are those at 0.5: not repeated
                    at = {k: v for k, v in at.items() if k not in THRESHOLD_FREE}
                    at["threshold"] = {"value": float(chosen["threshold"])}
                    self.at_chosen.setdefault(f"{name}{VAL_THRESHOLD_SUFFIX}", {})[f"scan:{t}"] = at
                self.scan_curves.setdefault(f"scan:{t}", {})[name] = (
                    scan_y[:, j].astype(int),
                    scan_p[:, j],
                    out[f"scan:{t}"],
                )
                curves.setdefault("scan", {})[t] = (
                    scan_y[:, j].astype(int),
                    scan_p[:, j],
                    out[f"scan:{t}"]["auroc"]["value"],
                    out[f"scan:{t}"]["auroc"]["ci_low"],
                    out[f"scan:{t}"]["auroc"]["ci_high"],
                )
            dice = g["dice"][:, j]
            finite = np.isfinite(dice)
            if finite.any():
                out[f"dice:{t}"] = {
                    "dice": {
                        **mean_with_ci(dice[finite], scans[finite], **resampling),
                        "n_scans": int(finite.sum()),
                    },
                    "dice_threshold": {
                        "value": thresholds.values[j],
                        "source": thresholds.sources[j],
                        "validation_dice": thresholds.validation_dice[j],
                    },
                }
            if "voxel_hist" in g:
                voxel = self.voxel_auroc(g["voxel_hist"].reshape(n, n_t, 2, -1)[:, j], scans)
                if voxel is not None:
                    out[f"voxel:{t}"] = voxel
            rank = prioritization(scan_p[:, j], scan_y[:, j] > 0)
            if rank:
                out[f"prioritization:{t}"] = rank
        rank = prioritization(scan_p.max(1), scan_y.max(1) > 0)
        if rank:
            out["prioritization:any"] = rank
        self.plot_curves(
            trainer,
            {
                "roc_damil_types.png": (curves.get("type", {}), "Region level: types (Fig. 3)"),
                "roc_damil_regions.png": (curves.get("region", {}), "Region level: regions (Fig. 3)"),
                "roc_damil_scan.png": (curves.get("scan", {}), "Scan level"),
            },
            holdout=None if name == "test" else name,
        )
        pred = table[["scan_id", "patient_id"]].copy()
        pred["unclear"] = g["unclear"].astype(int)
        cols = [f"{r}__{t}" for r in space.anatomical_regions for t in space.types]
        cells = pd.DataFrame(region_p.reshape(n, -1), columns=[f"{c}_prob" for c in cols])
        truth = pd.DataFrame(region_y.reshape(n, -1), columns=[f"{c}_true" for c in cols])
        scan = pd.DataFrame(
            {
                **{f"scan__{t}_prob": scan_p[:, j] for j, t in enumerate(space.types)},
                **{f"scan__{t}_true": scan_y[:, j] for j, t in enumerate(space.types)},
                **{f"dice__{t}": g["dice"][:, j] for j, t in enumerate(space.types)},
            }
        )
        self.write_predictions(trainer, name, pd.concat([pred, scan, cells, truth], axis=1))
        return out

    def headline(self) -> dict[str, Any]:
        keep = (
            "micro",
            "type:",
            "weighted_macro",
            "scan:",
            "scan_weighted_macro",
            "dice:",
            "voxel:",
            "prioritization:any",
            "cq500:",
        )
        wanted = (
            "auroc",
            "average_precision",
            "ece",
            "dice",
            "dice_threshold",
            "p_value",
            "n",
            "n_positive",
            "n_scans",
        )
        return {
            name: {
                label: {m: f for m, f in per_metric.items() if m in wanted}
                for label, per_metric in per_label.items()
                if label.startswith(keep)
            }
            for name, per_label in self.metrics.items()
        }
