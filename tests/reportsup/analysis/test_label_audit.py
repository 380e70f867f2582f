"""Label audit: labeller-vs-gold agreement counted by hand, conflicting duplicate reports, the command."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from reportsup.analysis.label_audit import (
    LabelAuditError,
    audit_labeller,
    conflicting_duplicates,
    normalise_text,
    similar_pairs,
    tfidf_vectors,
)
from reportsup.cli.label_audit import main

# Ten gold reports, four positive. At threshold 0.5 (positive when prob > 0.5):
#   R1-R3 0.9, 0.8, 0.6 -> tp = 3;  R4 0.2 -> fn = 1
#   R5, R6 0.7, 0.51 -> fp = 2;     R7-R10 0.1, 0.3, 0.5 (not > 0.5), 0.0 -> tn = 4
GOLD_Y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
PROBS = [0.9, 0.8, 0.6, 0.2, 0.7, 0.51, 0.1, 0.3, 0.5, 0.0]
IDS = [f"R{k}" for k in range(1, 11)]


def _gold() -> pd.DataFrame:
    return pd.DataFrame({"report_id": IDS, "abnormal": [str(v) for v in GOLD_Y]})


def _predictions() -> pd.DataFrame:
    # A run's predictions file: shuffled order, an extra report the gold set lacks, and `_true` columns
    # (the training labels, all 1 here) that must never be mistaken for the prediction.
    pred = pd.DataFrame(
        {
            "id": IDS + ["R99"],
            "patient_id": [f"P{k}" for k in range(11)],
            "abnormal_true": 1,
            "abnormal_prob": PROBS + [0.99],
        }
    )
    return pred.sample(frac=1.0, random_state=3).reset_index(drop=True)


def test_audit_matches_hand_counts_and_kappa_formula():
    row = audit_labeller(_predictions(), _gold(), ["abnormal"], gold_id_column="report_id").iloc[0]
    assert (row.tp, row.fp, row.fn, row.tn) == (3, 2, 1, 4)
    assert (row.n, row.n_positive, row.n_not_annotated, row.n_missing) == (10, 4, 0, 0)
    assert row.prediction_column == "abnormal_prob"
    assert row.sensitivity == pytest.approx(3 / 4)
    assert row.specificity == pytest.approx(4 / 6)
    assert row.precision == pytest.approx(3 / 5)
    assert row.f1 == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert row.accuracy == pytest.approx(7 / 10)
    po = 7 / 10
    pe = (4 / 10) * (5 / 10) + (6 / 10) * (5 / 10)  # gold positive rate x predicted positive rate + negatives
    assert row.kappa == pytest.approx((po - pe) / (1 - pe))  # = 0.4


def test_audit_agrees_with_run_metrics_threshold_convention():
    # Same numbers as metrics.json (reportsup.analysis.metrics, torchmetrics: prob > threshold), incl. the 0.5 tie.
    from reportsup.analysis.metrics import binary_metrics

    row = audit_labeller(_predictions(), _gold(), ["abnormal"], gold_id_column="report_id").iloc[0]
    ref = binary_metrics(np.array(GOLD_Y), np.array(PROBS), 0.5)
    for m in ("sensitivity", "specificity", "f1", "accuracy"):
        assert row[m] == pytest.approx(ref[m])


def test_unannotated_gold_is_excluded_and_counted():
    gold = pd.concat([_gold(), pd.DataFrame({"report_id": ["R99"], "abnormal": [""]})], ignore_index=True)
    row = audit_labeller(_predictions(), gold, ["abnormal"], gold_id_column="report_id").iloc[0]
    assert (row.n, row.n_not_annotated, row.tp, row.fp) == (10, 1, 3, 2)  # R99's 0.99 is not a false positive


def test_prediction_column_lookup_order():
    gold = _gold()
    hard = pd.DataFrame({"id": IDS, "abnormal_pred": [int(p > 0.5) for p in PROBS], "abnormal": 0})
    row = audit_labeller(hard, gold, ["abnormal"], gold_id_column="report_id").iloc[0]
    assert row.prediction_column == "abnormal_pred" and (row.tp, row.fp, row.fn, row.tn) == (3, 2, 1, 4)
    bare = hard.drop(columns="abnormal_pred").assign(abnormal=[int(p > 0.5) for p in PROBS])
    assert audit_labeller(bare, gold, ["abnormal"], gold_id_column="report_id").iloc[0].tp == 3
    both = _predictions().assign(abnormal_pred=0)
    row = audit_labeller(both, gold, ["abnormal"], gold_id_column="report_id", threshold=0.85).iloc[0]
    assert row.prediction_column == "abnormal_prob" and row.tp == 1  # only 0.9 > 0.85


def test_gold_reports_the_labeller_never_scored():
    pred = _predictions()
    pred = pred[~pred["id"].isin(["R2", "R9"])]
    with pytest.raises(LabelAuditError, match=r"2 of 10 .*'R2', 'R9'|2 of 10 .*'R9', 'R2'"):
        audit_labeller(pred, _gold(), ["abnormal"], gold_id_column="report_id")
    row = audit_labeller(pred, _gold(), ["abnormal"], gold_id_column="report_id", allow_missing=True).iloc[0]
    assert (row.n, row.n_missing, row.tp, row.tn) == (8, 2, 2, 3)  # R2 was a tp, R9 a tn


def test_bad_gold_value_names_row_id_and_column():
    gold = _gold()
    gold.loc[6, "abnormal"] = "2"
    with pytest.raises(LabelAuditError, match=r"row 7 \(report_id='R7'\), column 'abnormal': value '2'"):
        audit_labeller(_predictions(), gold, ["abnormal"], gold_id_column="report_id")


def test_kappa_undefined_when_both_raters_constant():
    gold = pd.DataFrame({"report_id": IDS[:3], "abnormal": ["1", "1", "1"]})
    pred = pd.DataFrame({"id": IDS[:3], "abnormal_prob": [0.9, 0.9, 0.9]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = audit_labeller(pred, gold, ["abnormal"], gold_id_column="report_id").iloc[0]
    assert np.isnan(row.kappa) and np.isnan(row.specificity) and row.sensitivity == 1.0


# ----------------------------------------------------------------------------- duplicates

LONG = (
    "MRI head: axial T2, FLAIR, DWI and SWI, sagittal T1. Comparison is made with the previous MRI of 2016. "
    "The ventricles and extra-axial CSF spaces are of normal size and configuration. No evidence of acute "
    "infarction. Grey-white matter differentiation is preserved. The pituitary gland is unremarkable. "
    "The cerebellar tonsils are normally positioned. Conclusion: Normal intracranial appearances."
)
ONE_WORD_CHANGED = LONG.replace("unremarkable", "enlarged")


def _table() -> pd.DataFrame:
    rows = [
        ("A1", "No acute intracranial abnormality.", 0, 0),
        ("A2", "  NO ACUTE   intracranial abnormality ", 1, 0),  # same text, case/spacing: abnormal differs
        ("B1", LONG, 0, 0),
        ("B2", ONE_WORD_CHANGED, 1, 1),  # one word changed in a long report: both labels differ
        ("C1", "There is a large mass in the left frontal lobe with surrounding oedema.", 1, 1),
        ("C2", "Chronic small vessel disease; no haemorrhage.", 0, 0),  # unrelated to C1
        ("D1", "Normal study.", 0, 0),
        ("D2", "normal study", 0, 0),  # identical, same labels: not a conflict
        ("E1", "Established right MCA territory infarct.", 1, ""),
        ("E2", "established right mca territory infarct", 1, 0),  # mass unknown vs 0: not a conflict
    ]
    return pd.DataFrame(rows, columns=["report_id", "text", "abnormal", "mass"])


def test_conflicting_duplicates_known_groups():
    assert (ONE_WORD_CHANGED != LONG) and len(LONG) > 300
    out = conflicting_duplicates(_table(), labels=["abnormal", "mass"], similarity=0.9)
    assert out["report_id"].tolist() == ["A1", "A2", "B1", "B2"]
    assert out["group"].tolist() == [1, 1, 2, 2]
    assert out["match"].tolist() == ["identical", "identical", "near-identical", "near-identical"]
    assert out["conflicting_labels"].tolist() == ["abnormal", "abnormal", "abnormal;mass", "abnormal;mass"]
    assert out["row"].tolist() == [1, 2, 3, 4]
    assert out["similarity"].iloc[:3].tolist() == [1.0, 1.0, 1.0]
    assert 0.9 <= out["similarity"].iloc[3] < 1.0
    assert (
        out["text"].iloc[1] == "  NO ACUTE   intracranial abnormality "
    )  # the original text, not normalised


def test_near_duplicate_needs_the_similarity():
    out = conflicting_duplicates(_table(), labels=["abnormal", "mass"], similarity=0.999)
    assert out["report_id"].tolist() == ["A1", "A2"]  # identical texts are always grouped


def test_normalise_text():
    assert normalise_text(pd.Series(["  Left-sided  INFARCT.\n"])).iloc[0] == "left sided infarct"


def test_empty_text_is_named_not_dropped():
    table = _table()
    table.loc[4, "text"] = "   "
    table.loc[7, "text"] = None
    with pytest.raises(LabelAuditError, match=r"2 empty report text\(s\): row 5 \(report_id='C1'\), row 8"):
        conflicting_duplicates(table, labels=["abnormal"])


def test_similar_pairs_is_exact(synthetic_dir):
    """The pruned search finds exactly the pairs of an all-pairs product, also with a poor bound."""
    texts = pd.read_csv(synthetic_dir / "reports.csv")["text"].iloc[:300].tolist()
    texts += [t.replace(" is ", " was ", 1) for t in texts[:20]] + [t + " No change." for t in texts[20:30]]
    unique = normalise_text(pd.Series(texts)).unique()
    X = tfidf_vectors(list(unique))
    full = (X @ X.T).toarray()
    upper = np.triu_indices(len(unique), 1)
    for threshold in (0.6, 0.9):
        expected = {(int(i), int(j)) for i, j in zip(*upper, strict=True) if full[i, j] >= threshold}
        assert expected  # the synthetic texts and the edits above give pairs at both thresholds
        for rank, n_common, max_cells in ((128, 16384, 25_000_000), (3, 40, 5_000), (0, 0, 1_000)):
            i, j, s = similar_pairs(X, threshold, rank=rank, n_common=n_common, max_cells=max_cells)
            assert set(zip(i.tolist(), j.tolist(), strict=True)) == expected
            assert np.allclose(s, full[i, j], atol=1e-5)


# ----------------------------------------------------------------------------- command


def test_score_command(tmp_path, capsys):
    pred_path, gold_path, out = tmp_path / "predictions_test.csv", tmp_path / "gold.jsonl", tmp_path / "a.csv"
    _predictions().to_csv(pred_path, index=False)
    _gold().assign(site="internal").to_json(gold_path, orient="records", lines=True)
    main(["score", "--predictions", str(pred_path), "--gold", str(gold_path), "--out", str(out)])
    printed = capsys.readouterr().out
    assert (
        "| abnormal | 10 | 4 | 3 | 2 | 1 | 4 | 0 | 0 | 0.750 | 0.667 | 0.600 | 0.667 | 0.700 | 0.400 |"
        in printed
    )
    audit = pd.read_csv(out)
    assert audit["label"].tolist() == ["abnormal"]  # found in both files; `site` and ids are not labels
    assert audit.loc[0, ["tp", "fp", "fn", "tn"]].tolist() == [3, 2, 1, 4]


def test_score_command_bad_inputs(tmp_path):
    pred_path, gold_path = tmp_path / "pred.csv", tmp_path / "gold.csv"
    _predictions().to_csv(pred_path, index=False)
    gold = _gold()
    gold.loc[2, "abnormal"] = "yes"
    gold.to_csv(gold_path, index=False)
    with pytest.raises(
        SystemExit, match=r"reportsup-label-audit: .*gold.csv, row 3 \(report_id='R3'\), column 'abnormal'"
    ):
        main(["score", "--predictions", str(pred_path), "--gold", str(gold_path)])
    _gold().to_csv(gold_path, index=False)
    with pytest.raises(
        SystemExit, match=r"column\(s\) \['mass'\] not found; the file has \['report_id', 'abnormal'\]"
    ):
        main(["score", "--predictions", str(pred_path), "--gold", str(gold_path), "--labels", "mass"])
    with pytest.raises(SystemExit, match=r"nothere.csv: gold file not found"):
        main(["score", "--predictions", str(pred_path), "--gold", str(tmp_path / "nothere.csv")])


def test_duplicates_command(tmp_path, capsys):
    table_path, out = tmp_path / "reports.csv", tmp_path / "conflicts.parquet"
    _table().to_csv(table_path, index=False)
    main(
        [
            "duplicates",
            str(table_path),
            "--labels",
            "abnormal",
            "mass",
            "--similarity",
            "0.9",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "2 conflicting group(s)" in printed and "1 identical, 1 near-identical" in printed
    assert pd.read_parquet(out)["report_id"].tolist() == ["A1", "A2", "B1", "B2"]

    table = _table()
    table.loc[5, "text"] = ""
    table.to_csv(table_path, index=False)
    with pytest.raises(
        SystemExit, match=r"column 'text': 1 empty report text\(s\): row 6 \(report_id='C2'\)"
    ):
        main(["duplicates", str(table_path), "--labels", "abnormal"])
    with pytest.raises(SystemExit, match=r"label column\(s\) \['atrophy'\] not found; the file has \["):
        main(["duplicates", str(_write(tmp_path)), "--labels", "atrophy"])


def _write(tmp_path):
    path = tmp_path / "ok.csv"
    _table().to_csv(path, index=False)
    return path
