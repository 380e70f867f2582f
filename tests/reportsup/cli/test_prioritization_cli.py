"""``reportsup-prioritization`` (Liu et al. 2023, Figure 5 / S5) on a small predictions CSV and disease
table: the numbers are those worked out by hand in tests/reportsup/analysis/test_prioritization.py."""

from __future__ import annotations

import pandas as pd
import pytest

from reportsup.cli import prioritization as cli

IDS = [f"s{i}" for i in range(1, 9)]
HYPER = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]


def _inputs(tmp_path):
    """A DaMIL evaluator's predictions (two types, plus a predicted scan without labels) and the
    disease table of the hand-worked example."""
    predictions = pd.DataFrame(
        {
            "scan_id": [*IDS, "extra"],
            "scan__hyper_prob": [*HYPER, 0.99],
            "scan__hyper_true": [1] * 9,
            "scan__hypo_prob": [0.1] * 9,
        }
    )
    diseases = pd.DataFrame(
        {
            "scan_id": IDS,
            "hemorrhage": [1, 1, 0, 1, 0, 0, 0, 0],
            "infarction": [0, 0, 1, 0, 0, 0, 1, 0],
        }
    )
    run = tmp_path / "run"
    run.mkdir()
    predictions.to_csv(run / "predictions_preoperative.csv", index=False)
    diseases.to_csv(tmp_path / "diseases.csv", index=False)
    return run, tmp_path / "diseases.csv"


def test_writes_the_table_and_figures_and_refuses_to_overwrite(tmp_path, capsys):
    run, diseases = _inputs(tmp_path)
    out = tmp_path / "prio"
    cli.main([str(run), "--diseases", str(diseases), "--out", str(out)])
    result = pd.read_csv(out / "prioritization.csv")
    assert list(dict.fromkeys(result["score"])) == ["any", "hyper", "hypo"]
    hyper = result[result["score"] == "hyper"].set_index("disease")
    assert hyper.loc["hemorrhage", ["median_rank", "q1_rank", "q3_rank", "u_statistic"]].tolist() == [
        2,
        1.5,
        3,
        14,
    ]
    assert hyper.loc["hemorrhage", "p_value"] == pytest.approx(2 / 56)
    assert hyper.loc["infarction", "p_value"] == pytest.approx(19 / 28)
    assert hyper.loc["any", "p_value"] == pytest.approx(4 / 56)
    # "extra" has no disease labels: it is not ranked (8 scans, not 9)
    assert (result["n_total"] == 8).all()
    # a constant score ties every scan: all share rank 4.5, U = n1 n0 / 2 and scipy's p is 1
    hypo = result[result["score"] == "hypo"]
    assert (hypo["median_rank"] == 4.5).all() and (hypo["auroc"] == 0.5).all()
    assert (hypo["p_value"] == 1).all() and not hypo["significant"].any()
    for name in ("any", "hyper", "hypo", "median_ranks"):
        assert (out / f"prioritization_{name}.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "ranked 8 scans" in printed and "1 predicted scan(s) without disease labels" in printed
    assert "hemorrhage (37.5%): 2 [1.5, 3] of 8, p = 0.0357" in printed

    before = (out / "prioritization.csv").read_bytes()
    with pytest.raises(SystemExit, match="prioritization.csv exists; choose a new --out"):
        cli.main([str(run), "--diseases", str(diseases), "--out", str(out)])
    assert (out / "prioritization.csv").read_bytes() == before


def test_one_score_writes_no_median_rank_figure(tmp_path):
    run, diseases = _inputs(tmp_path)
    out = tmp_path / "prio"
    cli.main([str(run / "predictions_preoperative.csv"), "--diseases", str(diseases), "--out", str(out)])
    assert (out / "prioritization_median_ranks.png").is_file()  # a CSV given directly works too
    cli.main([str(run), "--diseases", str(diseases), "--out", str(tmp_path / "b"), "--scores", "hyper"])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "prioritization.csv",
        "prioritization_hyper.png",
    ]
    assert (pd.read_csv(tmp_path / "b" / "prioritization.csv")["score"] == "hyper").all()


def test_bad_disease_tables_are_clear_errors_and_write_nothing(tmp_path):
    run, diseases = _inputs(tmp_path)
    out = tmp_path / "prio"
    table = pd.read_csv(diseases)
    table.rename(columns={"scan_id": "id"}).to_csv(tmp_path / "no_id.csv", index=False)
    with pytest.raises(SystemExit, match="no_id.csv: no 'scan_id' column"):
        cli.main([str(run), "--diseases", str(tmp_path / "no_id.csv"), "--out", str(out)])
    pd.concat([table, pd.DataFrame({"scan_id": ["s9"], "hemorrhage": [1], "infarction": [0]})]).to_csv(
        tmp_path / "unpredicted.csv", index=False
    )
    with pytest.raises(SystemExit, match="unpredicted.csv: 1 scan id.*no prediction: s9"):
        cli.main([str(run), "--diseases", str(tmp_path / "unpredicted.csv"), "--out", str(out)])
    with pytest.raises(SystemExit, match="unknown score.*nope"):
        cli.main([str(run), "--diseases", str(diseases), "--out", str(out), "--scores", "nope"])
    (run / "predictions_postoperative.csv").write_text((run / "predictions_preoperative.csv").read_text())
    with pytest.raises(SystemExit, match="several test sets.*--test-set"):
        cli.main([str(run), "--diseases", str(diseases), "--out", str(out)])
    with pytest.raises(SystemExit, match="no such file"):
        cli.main(
            [str(run), "--test-set", "preoperative", "--diseases", str(tmp_path / "x.csv"), "--out", str(out)]
        )
    assert not out.exists()
