"""Fleiss' kappa (ALARM Table 2): the Wikipedia worked example, perfect agreement, input checks, command."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from reportsup.analysis.agreement import (
    fleiss_kappa_from_matrix,
    fleiss_kappa_per_label,
    fleiss_kappa_table,
    rating_matrix,
)
from reportsup.cli.agreement import main

# Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories (counts per subject).
WIKIPEDIA_COUNTS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def long_from_counts(counts: list[list[int]]) -> pd.DataFrame:
    """One row per subject x rater: rater k of a subject gives the k-th label of its counts, in order."""
    rows = []
    for subject, row in enumerate(counts, start=1):
        labels = [category for category, c in enumerate(row, start=1) for _ in range(c)]
        rows += [{"item": f"s{subject}", "rater": f"r{k}", "label": lab} for k, lab in enumerate(labels)]
    return pd.DataFrame(rows)


def test_wikipedia_worked_example():
    result = fleiss_kappa_table(long_from_counts(WIKIPEDIA_COUNTS), "item", "rater", "label")
    assert round(result["kappa"], 3) == 0.210
    assert round(result["observed_agreement"], 3) == 0.378  # P-bar
    assert round(result["expected_agreement"], 3) == 0.213  # P-bar_e
    p, pe = result["observed_agreement"], result["expected_agreement"]
    assert result["kappa"] == pytest.approx((p - pe) / (1 - pe))
    assert result["category_proportions"] == pytest.approx([0.143, 0.200, 0.279, 0.150, 0.229], abs=5e-4)
    assert (result["n_items"], result["n_ratings_per_item"], result["n_raters"]) == (10, 14, 14)
    assert result["categories"] == [1, 2, 3, 4, 5]


def test_rater_identity_does_not_matter():
    # The paper: each report labelled by 2 or 3 of 6 neuroradiologists. Shuffling who rated what
    # (keeping each item's labels) leaves kappa unchanged.
    table = long_from_counts(WIKIPEDIA_COUNTS)
    rng = np.random.default_rng(0)
    table["rater"] = [f"x{v}" for v in rng.permutation(len(table))]
    assert round(fleiss_kappa_table(table, "item", "rater", "label")["kappa"], 3) == 0.210


def test_perfect_agreement_and_one_category():
    table = pd.DataFrame(
        {
            "item": ["a", "a", "a", "b", "b", "b", "c", "c", "c"],
            "rater": ["r1", "r2", "r3"] * 3,
            "label": [1, 1, 1, 0, 0, 0, 1, 1, 1],
        }
    )
    assert fleiss_kappa_table(table, "item", "rater", "label")["kappa"] == pytest.approx(1.0)
    table["label"] = 0  # everyone always says 0: chance agreement 1, kappa 0/0
    result = fleiss_kappa_table(table, "item", "rater", "label")
    assert math.isnan(result["kappa"]) and result["expected_agreement"] == 1.0


def test_wide_format_helper():
    matrix = pd.DataFrame(
        {"r1": [1, 0, 1, np.nan], "r2": [1, 0, 0, 1], "r3": [np.nan, np.nan, np.nan, 1]},
        index=pd.Index(["a", "b", "c", "d"], name="item"),
    )
    # items: {1,1} {0,0} {1,0} {1,1}: P_i = 1, 1, 0, 1 -> P-bar = 0.75; p = (3/8, 5/8) -> P_e = 34/64
    result = fleiss_kappa_from_matrix(matrix)
    assert result["observed_agreement"] == pytest.approx(0.75)
    assert result["expected_agreement"] == pytest.approx(34 / 64)
    assert result["kappa"] == pytest.approx((0.75 - 34 / 64) / (1 - 34 / 64))
    matrix.columns.name = "rater"
    long = matrix.stack().dropna().rename("label").reset_index()
    long["label"] = long["label"].astype(int)
    assert fleiss_kappa_table(long, "item", "rater", "label")["kappa"] == pytest.approx(result["kappa"])
    wide = rating_matrix(long, "item", "rater", "label")
    assert wide.shape == (4, 3) and wide.loc["a", "r1"] == 1 and isinstance(wide.loc["a", "r1"], int)


def test_unequal_raters_and_too_few_raters():
    table = pd.DataFrame(
        {
            "item": ["a", "a", "a", "b", "b", "c", "c", "c"],
            "rater": ["r1", "r2", "r3", "r1", "r2"] + ["r1", "r2", "r3"],
        }
    )
    table["label"] = 1
    with pytest.raises(ValueError, match=r"unequal numbers of ratings: 2 item\(s\) have 3, but b \(2\)"):
        fleiss_kappa_table(table, "item", "rater", "label")
    one = pd.DataFrame({"item": ["a", "b"], "rater": ["r1", "r1"], "label": [0, 1]})
    with pytest.raises(ValueError, match="at least 2 raters per item"):
        fleiss_kappa_table(one, "item", "rater", "label")


def test_duplicates_and_missing_labels_are_named():
    table = pd.DataFrame({"item": ["a", "a", "a"], "rater": ["r1", "r1", "r2"], "label": [0, 1, 1]})
    with pytest.raises(ValueError, match=r"more than once \(a/r1\)"):
        fleiss_kappa_table(table, "item", "rater", "label")
    table = pd.DataFrame({"item": ["a", "a"], "rater": ["r1", "r2"], "label": [0, None]})
    with pytest.raises(ValueError, match=r"no 'label' \(item/rater a/r2\)"):
        fleiss_kappa_table(table, "item", "rater", "label")


def test_per_label():
    table = pd.DataFrame(
        {
            "report_id": ["1", "1", "2", "2", "3", "3"],
            "rater": ["A", "B"] * 3,
            "mass": [1, 1, 0, 0, 1, 1],
            "atrophy": [1, 0, 0, 0, 1, 1],
        }
    )
    out = fleiss_kappa_per_label(table, "report_id", "rater", ["mass", "atrophy"])
    assert list(out) == ["mass", "atrophy"]
    assert out["mass"]["kappa"] == pytest.approx(1.0)
    # atrophy: P_i = 0, 1, 1 -> P-bar = 2/3; p = (1/2, 1/2) -> P_e = 1/2; kappa = 1/3
    assert out["atrophy"]["kappa"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no column 'stroke'"):
        fleiss_kappa_per_label(table, "report_id", "rater", ["stroke"])


def test_command_prints_and_writes_json(tmp_path, capsys):
    table = long_from_counts(WIKIPEDIA_COUNTS).rename(columns={"item": "report_id", "label": "category"})
    table["mass"] = 1
    path = tmp_path / "annotations.csv"
    table.to_csv(path, index=False)
    main([str(path), "--labels", "category", "mass", "--out", str(tmp_path / "kappa.json")])
    printed = capsys.readouterr().out
    assert "| category | 0.210 | 0.378 | 0.213 | 10 | 14 |" in printed
    assert "| mass | n/a (one category only) |" in printed
    saved = json.loads((tmp_path / "kappa.json").read_text())
    assert round(saved["category"]["kappa"], 3) == 0.210 and saved["mass"]["kappa"] is None
    main([str(path)])  # default: every column but item and rater
    assert "| category | 0.210 |" in capsys.readouterr().out


def test_command_bad_inputs(tmp_path):
    path = tmp_path / "annotations.csv"
    pd.DataFrame({"report_id": ["1", "1", "2"], "reader": ["A", "B", "A"], "mass": [1, 1, 0]}).to_csv(
        path, index=False
    )
    with pytest.raises(
        SystemExit,
        match=r"annotations\.csv: no column 'rater' \(--rater-column\); the table has 'report_id', 'reader'",
    ):
        main([str(path)])
    with pytest.raises(SystemExit, match=r"label 'mass': items have unequal numbers of ratings.*2 \(1\)"):
        main([str(path), "--rater-column", "reader"])
    with pytest.raises(SystemExit, match=r"nope\.csv: no such file"):
        main([str(tmp_path / "nope.csv")])
