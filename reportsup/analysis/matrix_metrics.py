"""Scoring abnormality matrices (Liu et al. 2023, "Quantification and statistical analysis"; Figs. 2C-D,
3, Table S6): gold (n, R, M) against predicted probabilities (n, R, M), rows = the label space's
regions (incl. other/unclear), columns = types.

Groups, each pooled into one ROC curve ("micro-averaged" as in the paper):

* ``type:<t>``: one type over the 17 anatomical regions;
* ``region:<r>``: one region with left and right merged, over the 4 types;
* ``micro``: all 17 x 4 anatomical cells;
* ``cell:<region>|<type>``: one cell (Table S6), with ``cells=True``.

Used by the discretizer's report-level evaluation and by the DaMIL analyzer's evaluation. ``space`` is
any label space with ``regions``, ``types``, ``anatomical_regions`` and ``merged_region_names()``
(``reportsup.contracts.labels.crossdl.LabelSpace``); analysis/ does not import datamodules/ (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

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


def prioritization(scores: np.ndarray, has_disease: np.ndarray) -> dict[str, dict[str, float]]:
    """Do scans with the abnormality rank higher? One-sided Wilcoxon rank-sum (Mann-Whitney U) test
    (paper Fig. 5, S5), with the mean rank (1 = highest score) of each group."""
    pos, neg = scores[has_disease.astype(bool)], scores[~has_disease.astype(bool)]
    if len(pos) == 0 or len(neg) == 0:
        return {}
    test = mannwhitneyu(pos, neg, alternative="greater")
    order = (-scores).argsort().argsort() + 1  # rank 1 = most urgent
    return {
        "u_statistic": {"value": float(test.statistic)},
        "p_value": {"value": float(test.pvalue)},
        "mean_rank_with": {"value": float(order[has_disease.astype(bool)].mean())},
        "mean_rank_without": {"value": float(order[~has_disease.astype(bool)].mean())},
        "n_with": {"value": int(len(pos))},
        "n_without": {"value": int(len(neg))},
    }
