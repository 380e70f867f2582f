"""Weighted-macro AUROC (Liu et al. 2023, Tables S6/S7) and the bootstrap CIs of it and of the mean Dice.

Hand example for :func:`weighted_macro_auroc` (6 scans, 3 cells; AUROC = pairs (positive, negative)
ordered correctly / n1 n0, a tie counts half)::

    cell A: y = 1 1 0 0 0 0, p = .9 .3 .8 .2 .1 .4
            .9 beats all 4 negatives, .3 beats .2 and .1      -> 6 / 8 = 0.75,   2 positives
    cell B: y = 1 1 1 0 0 0, p = .6 .7 .2 .5 .1 .3
            .6 -> 3, .7 -> 3, .2 beats .1 -> 1                -> 7 / 9,          3 positives
    cell C: y = 0 0 0 0 1 0, p = .1 .2 .3 .5 .5 .6
            .5 beats .1 .2 .3, ties the other .5 (1/2)        -> 3.5 / 5 = 0.7,  1 positive

    weighted macro = (2 * 0.75 + 3 * 7/9 + 1 * 0.7) / 6 = 4.5333 / 6 = 0.75556
    (the unweighted macro would be 0.74259; pooled "micro" is a different number again)
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

from reportsup.analysis.matrix_metrics import (
    column_aurocs,
    score_weighted_macro,
    weighted_macro_auroc,
    weighted_macro_metrics,
)
from reportsup.analysis.metrics import bootstrap_statistic, mean_with_ci
from reportsup.contracts.labels.crossdl import LabelSpace

Y = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=float)
P = np.array(
    [[0.9, 0.6, 0.1], [0.3, 0.7, 0.2], [0.8, 0.2, 0.3], [0.2, 0.5, 0.5], [0.1, 0.1, 0.5], [0.4, 0.3, 0.6]]
)


def test_weighted_macro_matches_the_hand_example_and_sklearn():
    aucs, n_pos = column_aurocs(Y, P)
    assert aucs == pytest.approx([0.75, 7 / 9, 0.7])
    assert n_pos.tolist() == [2, 3, 1]
    assert weighted_macro_auroc(Y, P) == pytest.approx(4.5333333 / 6, abs=1e-7)
    assert weighted_macro_auroc(Y, P) == pytest.approx(roc_auc_score(Y, P, average="weighted"))
    assert weighted_macro_auroc(Y, P) != pytest.approx(roc_auc_score(Y, P, average="macro"))


def test_a_cell_without_positives_weighs_nothing_and_one_without_negatives_is_left_out():
    empty = np.column_stack([Y, np.zeros(6)])  # an abnormality that cannot occur in a region
    full = np.column_stack([Y, np.ones(6)])  # every scan positive: AUROC undefined, 6 positives
    p = np.column_stack([P, np.linspace(0, 1, 6)])
    with pytest.warns(UndefinedMetricWarning):  # sklearn: NaN for the cell, weight 0 -> same number
        assert weighted_macro_auroc(empty, p) == pytest.approx(roc_auc_score(empty, p, average="weighted"))
    with pytest.warns(UndefinedMetricWarning):  # sklearn: NaN with weight 6 -> NaN; ours leaves it out
        assert np.isnan(roc_auc_score(full, p, average="weighted"))
    assert weighted_macro_auroc(full, p) == pytest.approx(roc_auc_score(Y, P, average="weighted"))
    assert np.isnan(weighted_macro_auroc(np.zeros((6, 2)), P[:, :2]))  # nothing scorable
    assert weighted_macro_metrics(np.zeros((6, 2)), P[:, :2], np.arange(6)) is None


def test_unknown_gold_cells_are_left_out_of_their_column_only():
    y = Y.copy()
    y[3, 0] = np.nan  # cell A of scan 4 unknown: A is scored on the other 5 scans
    aucs, _ = column_aurocs(y, P)
    keep = np.arange(6) != 3
    assert aucs[0] == pytest.approx(roc_auc_score(Y[keep, 0], P[keep, 0]))
    assert aucs[1:] == pytest.approx([7 / 9, 0.7])


def _scans(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 5)) < [0.1, 0.2, 0.3, 0.4, 0.5]).astype(float)
    p = np.clip(0.3 * y + 0.7 * rng.random((n, 5)), 0, 1)
    return y, p


def test_weighted_macro_ci_contains_the_estimate_and_narrows_with_more_scans():
    widths = []
    for n in (60, 600):
        y, p = _scans(n, seed=n)
        scored = weighted_macro_metrics(y, p, np.arange(n), n_bootstrap=300, seed=0)
        auc = scored["auroc"]
        assert auc["value"] == pytest.approx(roc_auc_score(y, p, average="weighted"))
        assert auc["ci_low"] <= auc["value"] <= auc["ci_high"]
        assert auc["n_bootstrap_valid"] == 300
        assert scored["n_scans"]["value"] == n and scored["n_cells"]["value"] == 5
        assert scored["n_positive"]["value"] == int(y.sum())
        widths.append(auc["ci_high"] - auc["ci_low"])
    assert widths[1] < 0.6 * widths[0]  # ~ 1 / sqrt(10) = 0.32 expected
    y, p = _scans(60, seed=60)
    first, again = (weighted_macro_metrics(y, p, np.arange(60), n_bootstrap=300, seed=0) for _ in range(2))
    assert first == again  # seeded


def test_score_weighted_macro_per_type_over_regions_and_over_all_cells():
    space = LabelSpace.from_config()
    n, n_r, n_t = 80, len(space.regions), len(space.types)
    rng = np.random.default_rng(1)
    gold = (rng.random((n, n_r, n_t)) < 0.15).astype(float)
    gold[:, space.regions.index(space.anatomical_regions[0]), 1] = 0  # an empty cell: left out
    other = [space.regions.index(r) for r in space.regions if r not in space.anatomical_regions]
    gold[:, other] = np.nan  # other/unclear rows have no prediction
    probs = np.clip(0.4 * np.nan_to_num(gold) + 0.6 * rng.random((n, n_r, n_t)), 0, 1)
    out = score_weighted_macro(gold, probs, np.arange(n), space, n_bootstrap=50)
    assert set(out) == {f"weighted_macro:{t}" for t in space.types} | {"weighted_macro"}
    rows = [space.regions.index(r) for r in space.anatomical_regions]
    for j, t in enumerate(space.types):
        y, p = gold[:, rows, j], probs[:, rows, j]
        ok = y.sum(0) > 0
        assert out[f"weighted_macro:{t}"]["auroc"]["value"] == pytest.approx(
            roc_auc_score(y[:, ok], p[:, ok], average="weighted")
        )
    assert out["weighted_macro:extraparenchymal_hyperdensity"]["n_cells"]["value"] == 16
    assert out["weighted_macro"]["n_cells"]["value"] == 17 * 4 - 1


def test_mean_dice_ci_contains_the_mean_narrows_and_is_nan_below_two_scans():
    rng = np.random.default_rng(0)
    widths = []
    for n in (10, 160):
        dice = rng.beta(2, 4, n)
        res = mean_with_ci(dice, [f"scan{i}" for i in range(n)], n_bootstrap=400, seed=3)
        assert res["value"] == pytest.approx(dice.mean())
        assert res["ci_low"] <= res["value"] <= res["ci_high"]
        assert "ci_note" not in res
        widths.append(res["ci_high"] - res["ci_low"])
    assert widths[1] < 0.5 * widths[0]  # ~ 1 / 4 expected
    one = mean_with_ci(np.array([0.3]), ["scan0"])
    assert one["value"] == pytest.approx(0.3)
    assert np.isnan(one["ci_low"]) and np.isnan(one["ci_high"]) and one["n_bootstrap_valid"] == 0
    assert "1 resampling unit" in one["ci_note"]
    # Two rows of one cluster (one patient) are still a single resampling unit.
    assert np.isnan(bootstrap_statistic(lambda rows: float(len(rows)), ["a", "a"])["ci_low"])
