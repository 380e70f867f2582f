"""Review prioritization (Liu et al. 2023, Figure 5 / S5): ranks, rank quartiles, the one-sided
Wilcoxon rank-sum (Mann-Whitney U) test and the disease table, on examples worked out by hand.

**Example 1 (no tied scores)**: eight scans ``s1``..``s8`` with the scores 0.9, 0.8, ..., 0.2, so the
abnormality ranks (1 = highest score) are 1..8.

* ``hemorrhage`` = s1, s2, s4 (ranks 1, 2, 4). Rank quartiles (numpy's linear interpolation, type 7):
  Q1 = 1.5, median = 2, Q3 = 3; as percentiles ``100 (r - 1) / 7``: 7.14, 14.29, 28.57. U counts the
  (with, without) pairs where the scan with the disease ranks higher: 5 + 5 + 4 = 14 of 3 x 5 = 15
  pairs, AUROC 14/15. Exact one-sided p = P(U >= 14) over the C(8, 3) = 56 equally likely rank sets:
  only {1, 2, 3} (U = 15) and {1, 2, 4} (U = 14), so p = 2/56 = 0.0357.
* ``infarction`` = s3, s7 (ranks 3, 7): quartiles 4, 5, 6; U = 4 + 1 = 5 of 12. For ranks {a < b},
  U = 15 - a - b, so U >= 5 <=> a + b <= 10: 7 + 6 + 4 + 2 = 19 of the C(8, 2) = 28 pairs, p = 19/28.
* ``any`` (the union) = s1, s2, s3, s4, s7 (ranks 1, 2, 3, 4, 7): quartiles 2, 3, 4; U = 3+3+3+3+1 = 13
  of 15. U >= 13 <=> at most 2 (without, with) inversions, i.e. the three scans without have ranks
  {6,7,8}, {5,7,8}, {4,7,8} or {5,6,8}: p = 4/56 = 1/14.

**Example 2 (tied scores)**: scores 0.9, 0.8, 0.7, 0.7, 0.5, 0.4, 0.3, 0.1 give the ranks 1, 2, 3.5,
3.5, 5, 6, 7, 8 (the tied pair shares 3.5). A disease on s1, s3, s6 (ranks 1, 3.5, 6): Q1 = 2.25,
median = 3.5, Q3 = 4.75; U = 5 + 3.5 + 2 = 10.5 (a tie counts half) of 15. With ties scipy uses the
normal approximation: mean n1 n0 / 2 = 7.5, variance n1 n0 / 12 ((n + 1) - sum(t^3 - t) / (n (n - 1)))
= 15/12 (9 - 6/56) = 11.116, continuity correction 0.5: z = (10.5 - 7.5 - 0.5) / sqrt(11.116) = 0.7498,
p = 1 - Phi(z) = 0.2267.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from reportsup.analysis.prioritization import (
    ANY,
    PAPER_ALPHA,
    RESULT_COLUMNS,
    PrioritizationInputError,
    abnormality_ranks,
    align,
    disease_matrix,
    disease_prioritization,
    plot_median_ranks,
    plot_prioritization,
    prioritization,
    prioritize_all,
    rank_percentiles,
    rank_test,
    scan_scores,
)

IDS = [f"s{i}" for i in range(1, 9)]
SCORES_1 = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
SCORES_2 = np.array([0.9, 0.8, 0.7, 0.7, 0.5, 0.4, 0.3, 0.1])


def _diseases() -> pd.DataFrame:
    """Example 1's disease table, as disease_matrix returns it."""
    return pd.DataFrame(
        {"hemorrhage": [1, 1, 0, 1, 0, 0, 0, 0], "infarction": [0, 0, 1, 0, 0, 0, 1, 0]},
        index=pd.Index(IDS, name="scan_id"),
    )


def _exact_p(scores: np.ndarray, has: np.ndarray) -> float:
    """P(U >= observed) by enumerating every way to choose which scans have the disease."""
    n, k = len(scores), int(has.sum())

    def u(mask: np.ndarray) -> float:
        a, b = scores[mask][:, None], scores[~mask][None, :]
        return float((a > b).sum() + 0.5 * (a == b).sum())

    observed = u(has)
    subsets = list(itertools.combinations(range(n), k))
    hits = 0
    for subset in subsets:
        mask = np.zeros(n, bool)
        mask[list(subset)] = True
        hits += u(mask) >= observed
    return hits / len(subsets)


def test_ranks_are_descending_and_ties_share_their_average_rank():
    assert abnormality_ranks(np.array([0.9, 0.5, 0.5, 0.1])).tolist() == [1, 2.5, 2.5, 4]
    assert abnormality_ranks(SCORES_2).tolist() == [1, 2, 3.5, 3.5, 5, 6, 7, 8]
    assert rank_percentiles(np.array([1, 8, 4.5]), 8).tolist() == [0, 100, 50]
    assert rank_percentiles(np.array([1.0]), 1).tolist() == [0]


def test_hand_worked_example_ranks_quartiles_u_and_exact_p():
    table = disease_prioritization(SCORES_1, _diseases())
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert table["disease"].tolist() == ["hemorrhage", "infarction", ANY]  # by median rank, any last
    rows = table.set_index("disease")
    expected = {  # (n, Q1, median, Q3, U, AUROC, p) from the module docstring
        "hemorrhage": (3, 1.5, 2, 3, 14, 14 / 15, 2 / 56),
        "infarction": (2, 4, 5, 6, 5, 5 / 12, 19 / 28),
        ANY: (5, 2, 3, 4, 13, 13 / 15, 4 / 56),
    }
    for name, (n, q1, median, q3, u, auroc, p) in expected.items():
        r = rows.loc[name]
        assert (r["n_scans"], r["n_total"]) == (n, 8)
        assert r["positive_ratio"] == pytest.approx(n / 8)
        assert (r["q1_rank"], r["median_rank"], r["q3_rank"]) == (q1, median, q3)
        assert r["median_percentile"] == pytest.approx(100 * (median - 1) / 7)
        assert r["u_statistic"] == u and r["auroc"] == pytest.approx(auroc)
        assert r["p_value"] == pytest.approx(p, abs=1e-12)
        assert not r["significant"] and r["note"] == ""  # p >= the paper's 0.001
    assert rows.loc["hemorrhage", "mean_rank"] == pytest.approx(7 / 3)
    assert rows.loc["hemorrhage", "mean_rank_without"] == pytest.approx((3 + 5 + 6 + 7 + 8) / 5)
    # the enumeration agrees with the hand count (scipy's exact null distribution, no ties)
    for name in ("hemorrhage", "infarction"):
        has = _diseases()[name].to_numpy().astype(bool)
        assert rows.loc[name, "p_value"] == pytest.approx(_exact_p(SCORES_1, has), abs=1e-12)
    assert PAPER_ALPHA == 0.001
    looser = disease_prioritization(SCORES_1, _diseases(), alpha=0.05).set_index("disease")
    assert looser["significant"].to_dict() == {"hemorrhage": True, "infarction": False, ANY: False}


def test_tied_scores_use_the_tie_corrected_normal_approximation():
    has = np.array([1, 0, 1, 0, 0, 1, 0, 0], bool)
    r = rank_test(SCORES_2, has)
    assert (r["q1_rank"], r["median_rank"], r["q3_rank"]) == (2.25, 3.5, 4.75)
    assert r["u_statistic"] == 10.5 and r["auroc"] == pytest.approx(0.7)
    variance = 15 / 12 * (9 - 6 / 56)
    z = (10.5 - 7.5 - 0.5) / math.sqrt(variance)
    assert r["p_value"] == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=1e-9)
    assert r["p_value"] == pytest.approx(0.2267, abs=1e-4)


def test_a_disease_no_scan_has_or_every_scan_has_gets_a_row_without_a_test():
    diseases = _diseases().assign(tumour=0, edema=1)
    rows = disease_prioritization(SCORES_1, diseases).set_index("disease")
    tumour, edema = rows.loc["tumour"], rows.loc["edema"]
    assert tumour["n_scans"] == 0 and np.isnan(tumour["median_rank"]) and np.isnan(tumour["p_value"])
    assert not tumour["significant"] and "no scan has it" in tumour["note"]
    assert edema["median_rank"] == 4.5 and np.isnan(edema["p_value"]) and "every scan" in edema["note"]
    assert rows.index[-1] == ANY and rows.index[-2] == "tumour"  # NaN medians sort after the others


def test_single_label_prioritization_in_metrics_json_form():
    has = _diseases()["hemorrhage"].to_numpy()
    out = prioritization(SCORES_1, has)
    assert out["u_statistic"]["value"] == 14
    assert out["p_value"]["value"] == pytest.approx(2 / 56)
    assert out["median_rank_with"]["value"] == 2
    assert (out["q1_rank_with"]["value"], out["q3_rank_with"]["value"]) == (1.5, 3)
    assert (out["n_with"]["value"], out["n_without"]["value"]) == (3, 5)
    assert out["mean_rank_without"]["value"] == pytest.approx(29 / 5)
    assert prioritization(SCORES_1, np.zeros(8)) == {} and prioritization(SCORES_1, np.ones(8)) == {}


def test_scores_per_type_and_any_from_either_predictions_format():
    evaluator = pd.DataFrame(
        {"scan_id": ["a", "b"], "scan__hyper_prob": [0.2, 0.9], "scan__hypo_prob": [0.7, 0.1]}
    )
    evaluator["scan__hyper_true"] = [0, 1]
    scores = scan_scores(evaluator)
    assert list(scores.columns) == ["hyper", "hypo", ANY]
    assert scores[ANY].tolist() == [0.7, 0.9]  # max over the types (Fig. 5A)
    predict = pd.DataFrame({"scan_id": ["a"], "scan__hyper": [0.3]})
    assert scan_scores(predict)["hyper"].tolist() == [0.3]
    with pytest.raises(PrioritizationInputError, match="no scan-level score columns"):
        scan_scores(pd.DataFrame({"scan_id": ["a"], "p": [0.3]}), "preds.csv")
    with pytest.raises(PrioritizationInputError, match="predicted more than once: a"):
        scan_scores(pd.DataFrame({"scan_id": ["a", "a"], "scan__x": [0.3, 0.4]}))
    with pytest.raises(PrioritizationInputError, match="without a numeric score: b"):
        scan_scores(pd.DataFrame({"scan_id": ["a", "b"], "scan__x": [0.3, "n/a"]}))


def test_disease_table_errors_name_the_file_row_and_column():
    good = pd.DataFrame({"scan_id": ["s1", "s2"], "edema": ["1", "0"]})
    assert disease_matrix(good)["edema"].tolist() == [1, 0]
    with pytest.raises(PrioritizationInputError, match="d.csv: no 'scan_id' column"):
        disease_matrix(good.rename(columns={"scan_id": "id"}), "d.csv")
    with pytest.raises(PrioritizationInputError, match=r"row 2 \(scan_id s2\), column 'edema': 'yes'"):
        disease_matrix(good.assign(edema=["1", "yes"]), "d.csv")
    with pytest.raises(PrioritizationInputError, match="more than once: s1"):
        disease_matrix(good.assign(scan_id=["s1", "s1"]))
    with pytest.raises(PrioritizationInputError, match="named 'Any'"):
        disease_matrix(good.assign(Any=["0", "1"]))
    with pytest.raises(PrioritizationInputError, match="one 0/1 column per disease"):
        disease_matrix(good[["scan_id"]])
    scores = pd.DataFrame({ANY: [0.5]}, index=pd.Index(["s1"], name="scan_id"))
    with pytest.raises(PrioritizationInputError, match="d.csv: 1 scan id.*no prediction: s2"):
        align(scores, disease_matrix(good), "d.csv")


def test_prioritize_all_stacks_every_score_and_the_figures_are_written(tmp_path):
    scores = pd.DataFrame(
        {"hyper": SCORES_1, "hypo": SCORES_1[::-1]}, index=pd.Index(IDS[::-1], name="scan_id")
    )
    scores[ANY] = scores.max(axis=1)
    diseases = _diseases()
    result = prioritize_all(scores, diseases)
    assert list(dict.fromkeys(result["score"])) == [ANY, "hyper", "hypo"]
    # scores are aligned by scan_id, not by position: hypo reversed on reversed ids = SCORES_1 on IDS
    hypo = result[result["score"] == "hypo"].set_index("disease")
    assert hypo.loc["hemorrhage", "u_statistic"] == 14
    with pytest.raises(PrioritizationInputError, match="unknown score.*nope"):
        prioritize_all(scores, diseases, ["nope"])
    rows = result[result["score"] == "hypo"].reset_index(drop=True)
    a = plot_prioritization(scores.loc[IDS, "hypo"].to_numpy(), diseases, rows, tmp_path / "a.png")
    b = plot_median_ranks(result, tmp_path / "b.png")
    assert a.stat().st_size > 1000 and b.stat().st_size > 1000
