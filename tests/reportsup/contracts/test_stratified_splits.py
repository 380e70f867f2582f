"""``data.split.stratify=true`` (issue 22, item 1): label-stratified patient-level splits and folds, and the
warning for a split with fewer than 5 positives of a label.

The skewed set is built from the ALARM demo's synthetic head-MRI reports (the generator of ``demo=true``):
300 patients, of whom exactly 12 are positive for ``mass`` (the issue's "Done when"), the other
granular labels as the generator made them (13 to 78 positive patients)."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd
import pytest

from datamodules.common.reports import ReportDataModule
from datamodules.synthetic.datasets.mri_reports import generate_tables
from reportsup.contracts.labels.alarm import BINARY_LABEL, GRANULAR_CATEGORIES
from reportsup.contracts.run_dir import DATA_SUMMARY, SPLITS_CSV
from reportsup.contracts.splits import SPLIT_NAMES, SUMMARY_KEY, SplitError, SplitProtocol
from reportsup.contracts.stratify import NEGATIVE, strata

LABELS = [BINARY_LABEL, *GRANULAR_CATEGORIES]  # the ALARM demo's labels
RARE = "mass"
#: configs/data/reports.yaml (ALARM): 60/20/20
FRACTIONS = (0.6, 0.2, 0.2)
SEEDS = range(40)


@pytest.fixture(scope="module")
def skewed() -> pd.DataFrame:
    """The demo's synthetic reports cut to 300 patients, exactly 12 of them positive for ``mass``."""
    reports = generate_tables(n_reports=600, seed=0)["reports"]
    positive = (reports[LABELS].fillna(0) >= 1).groupby(reports["patient_id"]).any()
    rare = sorted(positive.index[positive[RARE].to_numpy(dtype=bool)])
    others = sorted(positive.index[~positive[RARE].to_numpy(dtype=bool)])
    keep = set(rare[:12]) | set(others[:288])
    table = reports.loc[reports["patient_id"].isin(keep)].reset_index(drop=True)
    return table.assign(id=table["report_id"])


def _positive_patients(table: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """(split x label): positive patients of each label in each split."""
    pos = (table[LABELS].fillna(0) >= 1).assign(patient_id=table["patient_id"], split=split.to_numpy())
    per_patient = pos.groupby(["split", "patient_id"])[LABELS].any()
    return per_patient.groupby(level="split").sum().reindex(list(SPLIT_NAMES)).fillna(0).astype(int)


def _draw(table: pd.DataFrame, seed: int, stratify: bool, **kw) -> pd.Series:
    protocol = SplitProtocol(holdout_order="exclude_first", seed=seed, stratify=stratify, **kw)
    return protocol.assign(table, source="skewed.csv", what="reports", labels=table[LABELS]).split


def test_the_skewed_set_is_what_the_done_when_asks(skewed):
    assert skewed["patient_id"].nunique() == 300
    assert _positive_patients(skewed, pd.Series("train", index=skewed.index)).loc["train", RARE] == 12


def test_stratified_split_keeps_positives_of_a_12_patient_label_in_every_split(skewed):
    """Issue 22, "Done when": every seed keeps the rare label in train, val and test (10 of its 12
    patients have it as their rarest label: 6/2/2 of them at least), where the plain draw loses it from
    a split for some seeds."""
    for seed in SEEDS:
        counts = _positive_patients(skewed, _draw(skewed, seed, stratify=True))[RARE]
        assert counts.min() >= 2, (seed, counts.to_dict())
    lost = [s for s in SEEDS if _positive_patients(skewed, _draw(skewed, s, stratify=False))[RARE].min() == 0]
    # The contrast: seeds 12, 14, 16, 28, 36 leave val or test without a 'mass' patient when not stratified.
    assert lost == [12, 14, 16, 28, 36], lost
    assert _positive_patients(skewed, _draw(skewed, lost[0], stratify=True))[RARE].min() >= 2


#: stated tolerance: every label's prevalence (positive patients / patients) in every split is within 5
#: percentage points of its prevalence in the whole set (measured worst over 40 seeds: 4.3 points, the
#: plain draw 15); the patients whose rarest label it is split within one patient of the fractions
TOLERANCE = 0.05


def _prevalence_deviation(table: pd.DataFrame, split: pd.Series) -> pd.Series:
    """Per label: the largest |prevalence in a split - prevalence in the set| over train/val/test."""
    counts = _positive_patients(table, split)
    patients = table.assign(split=split.to_numpy()).groupby("split")["patient_id"].nunique()
    overall = counts.sum(axis=0) / table["patient_id"].nunique()
    return counts.div(patients.reindex(list(SPLIT_NAMES)), axis=0).sub(overall, axis=1).abs().max(axis=0)


def test_prevalence_of_every_label_is_within_the_stated_tolerance(skewed):
    stratum = strata(skewed["patient_id"], skewed[LABELS])
    worst_stratified, worst_plain = [], []
    for seed in SEEDS:
        split = _draw(skewed, seed, stratify=True)
        deviation = _prevalence_deviation(skewed, split)
        assert (deviation <= TOLERANCE).all(), (seed, deviation[deviation > TOLERANCE].to_dict())
        worst_stratified.append(deviation)
        worst_plain.append(_prevalence_deviation(skewed, _draw(skewed, seed, stratify=False)))
        # the stratum itself: floor or ceiling of each fraction of its patients
        in_stratum = skewed["patient_id"].map(stratum == RARE).to_numpy()
        dealt = (
            skewed.loc[in_stratum].assign(split=split[in_stratum].to_numpy()).groupby("split")["patient_id"]
        )
        n = int((stratum == RARE).sum())
        for name, fraction in zip(SPLIT_NAMES, FRACTIONS, strict=True):
            assert abs(dealt.nunique().get(name, 0) - fraction * n) < 1, (
                seed,
                name,
                dealt.nunique().to_dict(),
            )
    stratified, plain = pd.DataFrame(worst_stratified), pd.DataFrame(worst_plain)
    # And closer than the plain draw, label by label, on average over the seeds.
    assert (stratified.mean() < plain.mean()).all(), (stratified.mean(), plain.mean())
    assert plain.max().max() > TOLERANCE  # the tolerance is not one the plain draw meets anyway


@pytest.mark.parametrize("holdout_order", ["exclude_first", "split_first"])
@pytest.mark.parametrize("unit", ["patient", "row"])
def test_no_patient_in_two_splits_nor_in_a_holdout(skewed, holdout_order, unit):
    patients = sorted(skewed["patient_id"].unique())
    holdout = skewed.loc[skewed["patient_id"].isin(patients[::10])].head(40)  # some hold-out patients
    protocol = SplitProtocol(holdout_order=holdout_order, seed=7, stratify=True, unit=unit)
    run_split = protocol.assign(skewed, {"image_label": holdout}, source="skewed.csv", labels=skewed[LABELS])
    table = run_split.table()
    dev = table.loc[table["split"].isin(SPLIT_NAMES)]
    assert not set(dev["patient_id"]) & set(holdout["patient_id"])
    assert set(table.loc[table["split"] == "image_label", "patient_id"]) == set(holdout["patient_id"])
    if unit == "patient":
        assert dev.groupby("patient_id")["split"].nunique().max() == 1
    else:  # unit: row draws rows on their own; every row once
        assert (
            dev["id"].is_unique
            and len(dev) == len(skewed) - skewed["patient_id"].isin(holdout["patient_id"]).sum()
        )


def test_folds_are_stratified_and_partition_the_patients(skewed):
    test_of = {}
    for fold in range(5):
        split = _draw(skewed, 3, stratify=True, n_folds=5, fold=fold)
        counts = _positive_patients(skewed, split)
        # 12 over 5 folds: 2 or 3 in every fold
        assert counts.loc["test", RARE] in (2, 3) and counts.loc["val", RARE] in (2, 3)
        by_patient = skewed.assign(split=split.to_numpy()).groupby("patient_id")["split"].first()
        for patient in by_patient.index[by_patient == "test"]:
            assert patient not in test_of, (
                f"{patient} in the test fold of folds {test_of[patient]} and {fold}"
            )
            test_of[patient] = fold
    assert len(test_of) == 300  # every patient is a test patient exactly once
    sizes = pd.Series(test_of).value_counts()
    assert sizes.max() - sizes.min() <= 1
    # the validation fold of fold k is the test fold of fold k+1
    val0 = _draw(skewed, 3, stratify=True, n_folds=5, fold=0)
    val_patients = set(skewed.loc[val0.to_numpy() == "val", "patient_id"])
    assert val_patients == {p for p, f in test_of.items() if f == 1}


def test_the_draw_is_reproducible_from_the_seed_and_ignores_row_order(skewed):
    first = _draw(skewed, 4, stratify=True)
    again = _draw(skewed, 4, stratify=True)
    assert first.equals(again)
    shuffled = skewed.sample(frac=1.0, random_state=1)
    moved = _draw(shuffled, 4, stratify=True)
    assert dict(zip(shuffled["id"], moved, strict=True)) == dict(zip(skewed["id"], first, strict=True))
    assert not _draw(skewed, 5, stratify=True).equals(first)


#: sha256 (first 16 hex) of splits.csv of the skewed set drawn by splits.py *before* stratification
#: existed (commit ce1b240): stratify=false must leave every existing split as it was
BEFORE = {
    ("exclude_first", None): "05a87dc4571dad9f",
    ("split_first", None): "05a87dc4571dad9f",
    ("exclude_first", 5): "1b1c60572a0fc6bd",
    ("split_first", 5): "1b1c60572a0fc6bd",
}


@pytest.mark.parametrize(("holdout_order", "n_folds"), list(BEFORE))
def test_stratify_false_keeps_the_earlier_splits_byte_for_byte(skewed, holdout_order, n_folds):
    kw = {"seed": 3, "n_folds": 5, "fold": 2} if n_folds else {"seed": 0}
    protocol = SplitProtocol.from_config({**kw, "stratify": False}, holdout_order=holdout_order)
    table = protocol.assign(skewed, source="skewed.csv", labels=skewed[LABELS]).table()
    digest = hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()[:16]
    assert digest == BEFORE[(holdout_order, n_folds)]
    # the labels change nothing without stratify: the same split as a call without them
    plain = protocol.assign(skewed, source="skewed.csv").table()
    assert plain.equals(table)


def test_a_patients_stratum_is_its_rarest_positive_label():
    labels = pd.DataFrame(
        {"common": [1, 1, 1, 0, 1, np.nan], "rare": [0, 1, np.nan, 0, 0, np.nan]},
        index=[10, 11, 12, 13, 14, 15],
    )
    groups = pd.Series(["A", "A", "B", "C", "D", "E"], index=labels.index)
    assert strata(groups, labels).to_dict() == {
        "A": "rare",  # positive for both in its two rows: placed by the rarer
        "B": "common",
        "C": NEGATIVE,
        "D": "common",
        "E": NEGATIVE,  # unknown is not positive
    }


def test_the_warning_names_the_label_and_the_split_and_goes_to_data_summary(skewed, tmp_path, caplog):
    protocol = SplitProtocol(holdout_order="exclude_first", seed=0, stratify=True)
    with caplog.at_level(logging.WARNING, logger="reportsup.contracts.splits"):
        run_split = protocol.assign(skewed, source="skewed.csv", what="reports", labels=skewed[LABELS])
    test_line = next(r.getMessage() for r in caplog.records if "the test split" in r.getMessage())
    # 12 'mass' patients at 20 %: 2 or 3 patients, fewer than 5 reports of them in the test split
    n_mass = run_split.stratification["positives"]["test"][RARE]
    assert n_mass < 5
    assert f"'mass' ({n_mass})" in test_line
    assert "fewer than 5 positive reports" in test_line and "even stratified" in test_line
    run_split.save(tmp_path, data_summary={"path": "skewed.csv"})
    summary = json.loads((tmp_path / DATA_SUMMARY).read_text())
    assert summary["path"] == "skewed.csv"
    section = summary[SUMMARY_KEY]
    assert section["stratify"] is True and section["strata"][RARE] == 10  # 2 of its 12 have a rarer label
    assert {"split": "test", "label": RARE, "positives": n_mass} in section["few_positives"]
    # without stratify the message says how to fix it
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="reportsup.contracts.splits"):
        SplitProtocol(holdout_order="exclude_first", seed=5).assign(
            skewed, source="skewed.csv", what="reports", labels=skewed[LABELS]
        )
    assert any("set data.split.stratify=true" in r.getMessage() for r in caplog.records)


def test_config_and_request_errors_are_clear_messages(skewed):
    with pytest.raises(SplitError, match=r"data\.split\.stratify='yes': give true or false"):
        SplitProtocol.from_config({"stratify": "yes"}, holdout_order="exclude_first")
    with pytest.raises(
        SplitError, match=r"skewed\.csv: data\.split\.stratify=true needs the label of every row"
    ):
        SplitProtocol(holdout_order="exclude_first", stratify=True).assign(skewed, source="skewed.csv")
    assert SplitProtocol.from_config({"stratify": True}, holdout_order="exclude_first").stratify


def _alarm_csv(skewed: pd.DataFrame, tmp_path) -> str:
    path = tmp_path / "skewed.csv"
    skewed.drop(columns=["id"]).to_csv(path, index=False)
    return str(path)


def test_the_report_datamodule_stratifies_and_a_resume_checks_the_setting(skewed, tmp_path):
    path, run = _alarm_csv(skewed, tmp_path), tmp_path / "run"

    def module(stratify: bool) -> ReportDataModule:
        return ReportDataModule(
            path=path, labels=LABELS, split={"seed": 5, "stratify": stratify}, output_dir=str(run)
        )

    dm = module(True)
    dm.setup()
    assert dm.summary["positives"][dm.test_set_names[0]][RARE] >= 2  # the internal test set: report_label
    written = pd.read_csv(run / SPLITS_CSV, dtype=str)
    assert written.groupby("patient_id")["split"].nunique().max() == 1
    assert json.loads((run / DATA_SUMMARY).read_text())[SUMMARY_KEY]["stratify"] is True
    module(True).setup()  # the same setting resumes
    with pytest.raises(SplitError, match=r"the seed, fractions, stratify or data changed"):
        module(False).setup()  # seed 5 unstratified moves rows: refused, the file kept
    assert pd.read_csv(run / SPLITS_CSV, dtype=str).equals(written)
