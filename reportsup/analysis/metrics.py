"""Binary classification metrics with patient-level bootstrap confidence intervals.

Wood et al. 2021 report AUC-ROC, (balanced) accuracy, sensitivity, specificity and F1 (Tables 3, 4).
Issue 22 item 2 adds what a rare finding and a deployment need: average precision (PR-AUC, which,
unlike AUROC, falls with prevalence), PPV and NPV at the threshold, and calibration: the expected
calibration error over :data:`ECE_BINS` equal-width bins and the Brier score. Library implementations
throughout: torchmetrics (AUROC, AP, ECE, confusion counts) and scikit-learn (Brier score).
Point estimates come from torchmetrics at a fixed threshold (0.5 by default); the 95 % CI of a
single run resamples *patients* with replacement (reports of one patient are not independent),
``n_bootstrap`` times from a seeded generator, and takes percentiles. Replicates in which a metric
is undefined (e.g. AUROC with one class) are left out of that metric's percentiles and counted.

The resampling (:func:`cluster_resamples`) and the interval (:func:`percentile_interval`) are shared by
any statistic of rows (:func:`bootstrap_statistic`): Cross-DL's weighted-macro AUROC (Liu et al. 2023,
Tables S6/S7) and its mean Dice per abnormality type ("Localization", 95 % CIs), resampling scans.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import brier_score_loss
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_calibration_error,
    binary_stat_scores,
)

METRICS: tuple[str, ...] = (
    "auroc",
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "f1",
    "average_precision",
    "ppv",
    "npv",
    "ece",
    "brier",
)
#: metrics that do not depend on the decision threshold (reported once, not again at a chosen threshold)
THRESHOLD_FREE: tuple[str, ...] = ("auroc", "average_precision", "ece", "brier")
#: the papers' metrics (Wood et al. 2021, Tables 3-4): what the many Cross-DL region x type cells get, where
#: the issue 22 additions would multiply the bootstrap time of 68 cells for little use
PAPER_METRICS: tuple[str, ...] = METRICS[:6]
#: equal-width probability bins of the expected calibration error and the reliability diagram: 15 as in
#: Guo et al. 2017 ("On calibration of modern neural networks") and torchmetrics' default
ECE_BINS = 15


def _nan_div(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def confusion_counts(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, int]:
    """``{tp, tn, fp, fn}`` with ``prob > threshold`` positive (torchmetrics' convention)."""
    y = torch.as_tensor(np.asarray(y_true), dtype=torch.long)
    p = torch.as_tensor(np.asarray(y_prob), dtype=torch.float32)
    tp, fp, tn, fn, _ = (int(v) for v in binary_stat_scores(p, y, threshold=threshold))
    return {"tp": tp, "tn": tn, "fp": fp, "fn": fn}


def calibration_metrics(y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, float]:
    """``{ece, brier}`` (issue 22 item 2): torchmetrics' L1 expected calibration error over
    :data:`ECE_BINS` equal-width bins and scikit-learn's Brier score; NaN on an empty sample."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(y_prob, dtype=float)
    if len(y) == 0:
        return {"ece": float("nan"), "brier": float("nan")}
    ece = binary_calibration_error(
        torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(y), n_bins=ECE_BINS, norm="l1"
    )
    return {"ece": float(ece), "brier": float(brier_score_loss(y, p, pos_label=1))}


def binary_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5, metrics: Sequence[str] = METRICS
) -> dict[str, float]:
    """The ``metrics`` (default all :data:`METRICS`) of one label; NaN where a metric is undefined on
    these data (AUROC with one class, average precision without positives, PPV without positive calls)."""
    c = confusion_counts(y_true, y_prob, threshold)
    tp, fp, tn, fn = (float(c[k]) for k in ("tp", "fp", "tn", "fn"))
    y = torch.as_tensor(np.asarray(y_true), dtype=torch.long)
    p = torch.as_tensor(np.asarray(y_prob), dtype=torch.float32)
    n_pos, n_neg = tp + fn, tn + fp
    sens, spec = _nan_div(tp, n_pos), _nan_div(tn, n_neg)
    auroc = float(binary_auroc(p, y)) if n_pos > 0 and n_neg > 0 else float("nan")
    out = {
        "auroc": auroc,
        "accuracy": _nan_div(tp + tn, n_pos + n_neg),
        "balanced_accuracy": (sens + spec) / 2,
        "sensitivity": sens,
        "specificity": spec,
        "f1": _nan_div(2 * tp, 2 * tp + fp + fn),
        "ppv": _nan_div(tp, tp + fp),
        "npv": _nan_div(tn, tn + fn),
    }
    if "average_precision" in metrics:
        # AP is the area under the precision-recall curve: undefined without a positive to recall
        out["average_precision"] = float(binary_average_precision(p, y)) if n_pos > 0 else float("nan")
    if "ece" in metrics or "brier" in metrics:
        out.update(calibration_metrics(y_true, y_prob))
    return {m: out[m] for m in metrics}


def cluster_resamples(clusters: Sequence[Any], n_bootstrap: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Row indices of ``n_bootstrap`` percentile-bootstrap replicates that resample *clusters* (patients,
    or scans) with replacement: each replicate draws as many clusters as there are and keeps all rows of
    each draw. Seeded: the same clusters, ``n_bootstrap`` and ``seed`` give the same replicates."""
    _, codes = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    rows_of = [np.flatnonzero(codes == k) for k in range(codes.max() + 1)] if len(codes) else []
    rng = np.random.default_rng(seed)
    for _ in range(n_bootstrap if rows_of else 0):
        chosen = rng.integers(0, len(rows_of), len(rows_of))
        yield np.concatenate([rows_of[c] for c in chosen])


def percentile_interval(draws: Sequence[float], ci: float = 0.95) -> dict[str, float]:
    """``{ci_low, ci_high, n_bootstrap_valid}``: the ``ci`` percentile interval of the finite ``draws``
    (undefined replicates, NaN, are left out and not counted); NaN bounds when none is finite."""
    vals = np.asarray(draws, dtype=float)
    vals = vals[~np.isnan(vals)]
    alpha = (1 - ci) / 2
    low, high = np.quantile(vals, [alpha, 1 - alpha]) if len(vals) else (np.nan, np.nan)
    return {"ci_low": float(low), "ci_high": float(high), "n_bootstrap_valid": int(len(vals))}


def bootstrap_statistic(
    statistic: Callable[[np.ndarray], float],
    clusters: Sequence[Any],
    *,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    min_clusters: int = 2,
) -> dict[str, Any]:
    """``{value, ci_low, ci_high, n_bootstrap_valid}`` of any statistic of rows, with a cluster bootstrap.

    ``statistic(rows)`` gets row indices (``np.arange(n)`` for the point estimate, a replicate's
    :func:`cluster_resamples` for the interval) and returns a number, NaN where undefined. With fewer
    than ``min_clusters`` distinct clusters every replicate repeats the sample, so no interval is
    drawn: the bounds are NaN and ``ci_note`` says why (a one-scan "interval" would be a point).
    """
    clusters = np.asarray(clusters, dtype=object)
    out: dict[str, Any] = {"value": float(statistic(np.arange(len(clusters))))}
    n_clusters = len(np.unique(clusters.astype(str)))
    if n_clusters < min_clusters:
        out.update({"ci_low": float("nan"), "ci_high": float("nan"), "n_bootstrap_valid": 0})
        out["ci_note"] = (
            f"no bootstrap CI: {n_clusters} resampling unit(s), at least {min_clusters} are needed"
        )
        return out
    out.update(
        percentile_interval([statistic(rows) for rows in cluster_resamples(clusters, n_bootstrap, seed)], ci)
    )
    return out


def mean_with_ci(
    values: np.ndarray,
    clusters: Sequence[Any],
    *,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean of per-item ``values`` (e.g. one Dice per scan) with a cluster-bootstrap percentile CI
    (:func:`bootstrap_statistic`; NaN bounds and ``ci_note`` below 2 clusters)."""
    values = np.asarray(values, dtype=float)
    return bootstrap_statistic(
        lambda rows: float(values[rows].mean()) if len(rows) else float("nan"),
        clusters,
        n_bootstrap=n_bootstrap,
        ci=ci,
        seed=seed,
    )


def patient_bootstrap_ci(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    patient_ids: Sequence[str],
    *,
    threshold: float = 0.5,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    metrics: Sequence[str] = METRICS,
) -> dict[str, dict[str, float]]:
    """``{metric: {value, ci_low, ci_high, n_bootstrap_valid}}`` with a patient-level percentile bootstrap,
    for each of ``metrics`` (default all :data:`METRICS`)."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}.")
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    point = binary_metrics(y_true, y_prob, threshold, metrics)
    draws: dict[str, list[float]] = {m: [] for m in metrics}
    for idx in cluster_resamples(patient_ids, n_bootstrap, seed):
        for m, v in binary_metrics(y_true[idx], y_prob[idx], threshold, metrics).items():
            draws[m].append(v)
    return {m: {"value": point[m], **percentile_interval(draws[m], ci)} for m in metrics}
