"""Binary classification metrics with patient-level bootstrap confidence intervals.

Wood et al. 2021 report AUC-ROC, (balanced) accuracy, sensitivity, specificity and F1 (Tables 3, 4).
Point estimates come from torchmetrics at a fixed threshold (0.5 by default); the 95 % CI of a
single run resamples *patients* with replacement (reports of one patient are not independent),
``n_bootstrap`` times from a seeded generator, and takes percentiles. Replicates in which a metric
is undefined (e.g. AUROC with one class) are left out of that metric's percentiles and counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_stat_scores

METRICS: tuple[str, ...] = ("auroc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1")


def _nan_div(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def confusion_counts(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, int]:
    """``{tp, tn, fp, fn}`` with ``prob > threshold`` positive (torchmetrics' convention)."""
    y = torch.as_tensor(np.asarray(y_true), dtype=torch.long)
    p = torch.as_tensor(np.asarray(y_prob), dtype=torch.float32)
    tp, fp, tn, fn, _ = (int(v) for v in binary_stat_scores(p, y, threshold=threshold))
    return {"tp": tp, "tn": tn, "fp": fp, "fn": fn}


def binary_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """All :data:`METRICS` for one label; NaN where a metric is undefined on these data."""
    c = confusion_counts(y_true, y_prob, threshold)
    tp, fp, tn, fn = (float(c[k]) for k in ("tp", "fp", "tn", "fn"))
    y = torch.as_tensor(np.asarray(y_true), dtype=torch.long)
    p = torch.as_tensor(np.asarray(y_prob), dtype=torch.float32)
    n_pos, n_neg = tp + fn, tn + fp
    sens, spec = _nan_div(tp, n_pos), _nan_div(tn, n_neg)
    auroc = float(binary_auroc(p, y)) if n_pos > 0 and n_neg > 0 else float("nan")
    return {
        "auroc": auroc,
        "accuracy": _nan_div(tp + tn, n_pos + n_neg),
        "balanced_accuracy": (sens + spec) / 2,
        "sensitivity": sens,
        "specificity": spec,
        "f1": _nan_div(2 * tp, 2 * tp + fp + fn),
    }


def patient_bootstrap_ci(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    patient_ids: Sequence[str],
    *,
    threshold: float = 0.5,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """``{metric: {value, ci_low, ci_high, n_bootstrap_valid}}`` with a patient-level percentile bootstrap."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    point = binary_metrics(y_true, y_prob, threshold)
    _, codes = np.unique(np.asarray(patient_ids, dtype=object).astype(str), return_inverse=True)
    rows_of = [np.flatnonzero(codes == k) for k in range(codes.max() + 1)] if len(codes) else []
    rng = np.random.default_rng(seed)
    draws = {m: [] for m in METRICS}
    for _ in range(n_bootstrap if rows_of else 0):
        chosen = rng.integers(0, len(rows_of), len(rows_of))
        idx = np.concatenate([rows_of[c] for c in chosen])
        for m, v in binary_metrics(y_true[idx], y_prob[idx], threshold).items():
            draws[m].append(v)
    alpha = (1 - ci) / 2
    out = {}
    for m in METRICS:
        vals = np.asarray(draws[m], dtype=float)
        vals = vals[~np.isnan(vals)]
        low, high = np.quantile(vals, [alpha, 1 - alpha]) if len(vals) else (np.nan, np.nan)
        out[m] = {
            "value": point[m],
            "ci_low": float(low),
            "ci_high": float(high),
            "n_bootstrap_valid": int(len(vals)),
        }
    return out
