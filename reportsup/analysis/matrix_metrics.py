"""Scoring abnormality matrices (Liu et al. 2023, "Quantification and statistical analysis"; Figs. 2C-D,
3, Table S6): gold (n, R, M) against predicted probabilities (n, R, M), rows = the label space's
regions (incl. other/unclear), columns = types.

Groups, each pooled into one ROC curve ("micro-averaged" as in the paper):

* ``type:<t>``: one type over the 17 anatomical regions;
* ``region:<r>``: one region with left and right merged, over the 4 types;
* ``micro``: all 17 x 4 anatomical cells;
* ``cell:<region>|<type>``: one cell (Table S6), with ``cells=True``.

Weighted-macro AUROCs (Tables S6/S7, "Weighted macro" row: the cells' own AUROCs averaged with weights
= their positive counts, sklearn's ``average="weighted"``), :func:`score_weighted_macro`:

* ``weighted_macro:<t>``: one type over the 17 anatomical regions (the tables' row);
* ``weighted_macro``: all 17 x 4 anatomical cells.

Used by the discretizer's report-level evaluation and by the DaMIL analyzer's evaluation. ``space`` is
any label space with ``regions``, ``types``, ``anatomical_regions`` and ``merged_region_names()``
(``reportsup.contracts.labels.crossdl.LabelSpace``); analysis/ does not import datamodules/ (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import rankdata

from reportsup.analysis.metrics import bootstrap_statistic

Bootstrap = Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, Any]]
Curve = tuple[np.ndarray, np.ndarray, float, float, float]


def matrix_groups(space: Any, cells: bool = False) -> dict[str, tuple[list[int], list[int]]]:
    """Name -> (row indices into ``space.regions``, column indices) of every scored group."""
    n_t = len(space.types)
    anatomical = [space.regions.index(r) for r in space.anatomical_regions]
    groups = {
        **{f"type:{t}": (anatomical, [j]) for j, t in enumerate(space.types)},
        **{
            f"region:{name}": ([space.regions.index(r) for r in members], list(range(n_t)))
            for name, members in space.merged_region_names().items()
        },
        "micro": (anatomical, list(range(n_t))),
    }
    if cells:
        for r in space.anatomical_regions:
            for j, t in enumerate(space.types):
                groups[f"cell:{r}|{t}"] = ([space.regions.index(r)], [j])
    return groups


def score_matrices(
    gold: np.ndarray,
    probs: np.ndarray,
    clusters: np.ndarray,
    space: Any,
    bootstrap: Bootstrap,
    cells: bool = False,
) -> tuple[dict[str, Any], dict[str, dict[str, Curve]]]:
    """Metrics (with bootstrap CIs over ``clusters``: patients or scans) and ROC curves per group kind.

    Groups with a single class (no positive or no negative) are skipped: AUROC is undefined there.
    """
    out: dict[str, Any] = {}
    curves: dict[str, dict[str, Curve]] = {}
    n = len(gold)
    for name, (rows, cols) in matrix_groups(space, cells).items():
        y = gold[:, rows][:, :, cols].reshape(n, -1)
        p = probs[:, rows][:, :, cols].reshape(n, -1)
        c = np.repeat(clusters, y.shape[1])
        y, p = y.ravel(), p.ravel()
        known = ~np.isnan(y)
        y, p, c = y[known], p[known], c[known]
        if 0 < y.sum() < len(y):
            out[name] = bootstrap(y, p, c)
            auc = out[name]["auroc"]
            kind, _, member = name.partition(":")
            curves.setdefault(kind, {})[member or kind] = (
                y.astype(int),
                p,
                auc["value"],
                auc["ci_low"],
                auc["ci_high"],
            )
    return out, curves


# --- weighted-macro AUROC (Tables S6/S7) -----------------------------------------------------------------


def column_aurocs(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of (n, g) gold ``y`` (0/1, NaN = unknown) and scores ``p``: the AUROC and the number of
    positives among the known rows. The AUROC is the Mann-Whitney U over n1 n0 (ties count half, as
    sklearn and torchmetrics); NaN where a column has no positive or no negative."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if y.ndim == 1:
        y, p = y[:, None], p[:, None]
    known = ~np.isnan(y)
    n_pos = np.where(known, y, 0).sum(0)
    n_neg = known.sum(0) - n_pos
    aucs = np.full(y.shape[1], np.nan)
    if known.all():  # the usual case: every column at once
        ranks = rankdata(p, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            aucs = ((ranks * y).sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    else:
        for j in range(y.shape[1]):
            if n_pos[j] > 0 and n_neg[j] > 0:
                yy, ranks = y[known[:, j], j], rankdata(p[known[:, j], j])
                aucs[j] = ((ranks * yy).sum() - n_pos[j] * (n_pos[j] + 1) / 2) / (n_pos[j] * n_neg[j])
    aucs[(n_pos == 0) | (n_neg == 0)] = np.nan
    return aucs, n_pos


def weighted_macro_auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Macro AUROC over the columns of ``y`` (n, g) weighted by each column's positive count: Liu et al.
    2023, Tables S6/S7, "macro AUROC weighted by abnormality positive rates" (every column has the same
    scans, so rates and counts weigh alike); sklearn's ``roc_auc_score(y, p, average="weighted")``.

    Columns whose AUROC is undefined (no positive, or no negative) are left out. The tables' empty cells
    (an abnormality that cannot occur in a region) have no positives and weigh 0 either way; a column
    whose every scan is positive would make sklearn's average NaN (it warns and scores the column NaN
    with its full weight), here it is left out. NaN when no column is defined."""
    aucs, n_pos = column_aurocs(y, p)
    defined = ~np.isnan(aucs)
    if not defined.any():
        return float("nan")
    return float((aucs[defined] * n_pos[defined]).sum() / n_pos[defined].sum())


def weighted_macro_metrics(
    y: np.ndarray,
    p: np.ndarray,
    clusters: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any] | None:
    """:func:`weighted_macro_auroc` of (n, g) ``y``/``p`` with a percentile bootstrap over the rows'
    ``clusters`` (scans; each replicate recomputes every column's AUROC and weight), and the counts it
    averaged: ``{auroc: {value, ci_low, ci_high, n_bootstrap_valid}, n_scans, n_positive, n_cells}``.
    None when no column has both classes."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if y.ndim == 1:
        y, p = y[:, None], p[:, None]
    aucs, n_pos = column_aurocs(y, p)
    defined = ~np.isnan(aucs)
    if not defined.any():
        return None
    auroc = bootstrap_statistic(
        lambda rows: weighted_macro_auroc(y[rows], p[rows]),
        clusters,
        n_bootstrap=n_bootstrap,
        ci=ci,
        seed=seed,
    )
    return {
        "auroc": auroc,
        "n_scans": {"value": int(len(y))},
        "n_positive": {"value": int(n_pos[defined].sum())},
        "n_cells": {"value": int(defined.sum())},
    }


def weighted_macro_groups(space: Any) -> dict[str, tuple[list[int], list[int]]]:
    """Name -> (rows into ``space.regions``, type columns) of the weighted-macro summaries: per type over
    the 17 anatomical regions (``weighted_macro:<type>``, the "Weighted macro" row of Tables S6/S7) and
    over all 17 x 4 anatomical cells (``weighted_macro``, beside ``micro``)."""
    anatomical = [space.regions.index(r) for r in space.anatomical_regions]
    return {
        **{f"weighted_macro:{t}": (anatomical, [j]) for j, t in enumerate(space.types)},
        "weighted_macro": (anatomical, list(range(len(space.types)))),
    }


def score_weighted_macro(
    gold: np.ndarray,
    probs: np.ndarray,
    clusters: np.ndarray,
    space: Any,
    *,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`weighted_macro_metrics` of every :func:`weighted_macro_groups` group of gold (n, R, M)
    against probabilities (n, R, M), one cell = one column; groups with no scorable cell are left out."""
    n = len(gold)
    out: dict[str, Any] = {}
    for name, (rows, cols) in weighted_macro_groups(space).items():
        scored = weighted_macro_metrics(
            gold[:, rows][:, :, cols].reshape(n, -1),
            probs[:, rows][:, :, cols].reshape(n, -1),
            clusters,
            n_bootstrap=n_bootstrap,
            ci=ci,
            seed=seed,
        )
        if scored is not None:
            out[name] = scored
    return out
