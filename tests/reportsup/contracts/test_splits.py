import numpy as np
import pandas as pd
import pytest

from datamodules.common.reports import ReportDataModule
from reportsup.contracts.splits import (
    SplitError,
    assign_splits,
    check_run_split,
    exclude_holdout_patients,
    patient_kfold,
    patient_split,
)


def _table(n_patients=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = [
        {"report_id": f"R{p}_{e}", "patient_id": f"P{p}"}
        for p in range(n_patients)
        for e in range(rng.integers(1, 4))
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(15))
def test_no_patient_in_two_splits(seed):
    table = _table(seed=seed)
    split = assign_splits(table, seed=seed)
    assert split.groupby(table["patient_id"]).nunique().max() == 1
    assert set(split) == {"train", "val", "test"}
    counts = split.groupby(table["patient_id"]).first().value_counts(normalize=True)
    assert counts["train"] == pytest.approx(0.6, abs=0.02)


def test_split_is_deterministic_and_ignores_row_order():
    table = _table()
    first = assign_splits(table, seed=3)
    shuffled = table.sample(frac=1, random_state=1)
    again = assign_splits(shuffled, seed=3)
    assert (first == again.loc[first.index]).all()
    assert not (first == assign_splits(table, seed=4)).all()


def test_kfold_puts_every_patient_in_exactly_one_test_fold():
    patients = [f"P{i}" for i in range(50)]
    tests = [p for fold in range(5) for p, s in patient_kfold(patients, 0, 5, fold).items() if s == "test"]
    assert sorted(tests) == sorted(patients)


def test_bad_fractions_and_tiny_data_are_clear_errors():
    with pytest.raises(SplitError, match="sum to 1"):
        patient_split(["a", "b", "c"], 0, (0.5, 0.2, 0.2))
    with pytest.raises(SplitError, match="at least 3"):
        patient_split(["a", "b"], 0)


def test_split_file_with_patient_in_two_splits_is_rejected(tmp_path):
    table = pd.DataFrame({"report_id": ["r1", "r2", "r3"], "patient_id": ["p1", "p1", "p2"]})
    f = tmp_path / "split.csv"
    pd.DataFrame({"id": ["r1", "r2", "r3"], "split": ["train", "test", "val"]}).to_csv(f, index=False)
    with pytest.raises(SplitError, match="p1"):
        assign_splits(table, seed=0, file=f)


def test_holdout_patients_removed():
    table = pd.DataFrame({"report_id": ["a", "b", "c"], "patient_id": ["p1", "p2", "p3"]})
    kept, removed = exclude_holdout_patients(table, {"image_label": pd.DataFrame({"patient_id": ["p2"]})})
    assert list(kept["patient_id"]) == ["p1", "p3"] and removed == {"image_label": 1}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_datamodule_holdout_patients_never_in_train_val_test(synthetic_dir, tmp_path, seed):
    dm = ReportDataModule(
        path=str(synthetic_dir / "reports.csv"),
        labels=["abnormal"],
        holdouts={
            "image_label": str(synthetic_dir / "image_labels_abnormal.csv"),
            "external_site": str(synthetic_dir / "external_site.csv"),
        },
        split={"seed": seed},
        output_dir=str(tmp_path),
    )
    dm.setup()
    holdout_patients = set(dm.datasets["image_label"].table["patient_id"])
    assert (
        dm.summary["removed_for_holdout_patients"]["image_label"] > 0
    )  # the synthetic data makes this matter
    dev = {name: set(dm.datasets[name].table["patient_id"]) for name in ("train", "val", "report_label")}
    for name, patients in dev.items():
        assert not patients & holdout_patients, name
    assert (
        not dev["train"] & dev["val"]
        and not dev["train"] & dev["report_label"]
        and not dev["val"] & dev["report_label"]
    )
    splits = pd.read_csv(tmp_path / "splits.csv", dtype=str)
    assert list(splits.columns) == ["id", "patient_id", "split"]
    assert splits.groupby("patient_id")["split"].nunique().max() == 1


def test_a_run_split_refuses_moved_rows_and_holdouts_of_seen_patients(tmp_path):
    path = tmp_path / "splits.csv"
    recorded = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "patient_id": ["p", "q", "r", "s"],
            "split": ["train", "val", "test", "test"],
        }
    )
    recorded.to_csv(path, index=False)
    check_run_split(path, recorded)  # the same split: fine
    # A test-only run scoring a new set: a test patient left for the hold-out, new patients joined it.
    later = pd.DataFrame(
        {"id": ["a", "b", "c", "d", "x"], "patient_id": ["p", "q", "r", "s", "new"]},
    ).assign(split=["train", "val", "test", "prospective", "prospective"])
    check_run_split(path, later)
    with pytest.raises(SplitError, match=r"1 row\(s\) are in another split .*'c': test -> val"):
        check_run_split(path, later.assign(split=["train", "val", "val", "test", "prospective"]))
    with pytest.raises(
        SplitError, match=r"data\.holdouts\.prospective: 1 patient\(s\) \(e\.g\. 'q'\) trained"
    ):
        check_run_split(path, later.assign(split=["train", "prospective", "test", "test", "prospective"]))
