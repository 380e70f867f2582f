"""Patient-level splitting (Wood et al. 2021, "Modelling": 60/20/20 "at the patient level in order to
prevent data leakage"; hold-out patients removed first, Fig. 1).

Every split is a pure function of ``(seed, fractions, patient ids)``: the patient ids are sorted
before shuffling, so row order and duplicates in the table do not change the assignment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

SPLIT_NAMES = ("train", "val", "test")


class SplitError(ValueError):
    """A split request or split file that cannot be honoured; the message says what to change."""


def _shuffled_patients(patient_ids: Iterable[str], seed: int) -> np.ndarray:
    unique = np.array(sorted(set(patient_ids)), dtype=object)
    return unique[np.random.default_rng(seed).permutation(len(unique))]


def patient_split(
    patient_ids: Sequence[str], seed: int, fractions: Sequence[float] = (0.6, 0.2, 0.2)
) -> dict[str, str]:
    """Map each patient to train/val/test with the given fractions of *patients*."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise SplitError(
            f"data.split.fractions={list(fractions)}: give three non-negative fractions "
            "(train, val, test) that sum to 1."
        )
    patients = _shuffled_patients(patient_ids, seed)
    n = len(patients)
    if n < 3:
        raise SplitError(
            f"only {n} patient(s) in the development data: a train/val/test split needs at least 3."
        )
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    bounds = (n_train, n_train + n_val)
    out = {}
    for i, p in enumerate(patients):
        out[p] = "train" if i < bounds[0] else "val" if i < bounds[1] else "test"
    return out


def patient_kfold(patient_ids: Sequence[str], seed: int, n_folds: int, fold: int) -> dict[str, str]:
    """k-fold at patient level: fold ``fold`` is the test set, the next fold the validation set."""
    if n_folds < 3 or not 0 <= fold < n_folds:
        raise SplitError(
            f"data.split.n_folds={n_folds}, data.split.fold={fold}: need n_folds >= 3 "
            "(train, val and test folds) and 0 <= fold < n_folds."
        )
    folds = np.array_split(_shuffled_patients(patient_ids, seed), n_folds)
    val_fold = (fold + 1) % n_folds
    out = {}
    for k, members in enumerate(folds):
        name = "test" if k == fold else "val" if k == val_fold else "train"
        out.update({p: name for p in members})
    return out


def read_split_file(path: str | Path, table: pd.DataFrame) -> pd.Series:
    """A fixed split (CSV with ``id`` or ``report_id`` and ``split``), checked against the table:
    every report must be assigned, split names must be train/val/test, and no patient may be in two."""
    path = Path(path)
    if not path.exists():
        raise SplitError(f"{path}: split file not found (data.split.file).")
    sf = pd.read_csv(path, dtype=str, keep_default_na=False)
    id_col = "id" if "id" in sf.columns else "report_id" if "report_id" in sf.columns else None
    if id_col is None or "split" not in sf.columns:
        raise SplitError(
            f"{path}: a split file needs columns 'id' (or 'report_id') and 'split'; found {list(sf.columns)}."
        )
    # A run's own splits.csv also lists hold-out reports under their set's name: those rows are
    # ignored, unless they name a report of the development table.
    in_table = sf[id_col].isin(set(table["report_id"]))
    bad = sf.loc[~sf["split"].isin(SPLIT_NAMES) & in_table]
    sf = sf.loc[sf["split"].isin(SPLIT_NAMES)]
    if len(bad):
        raise SplitError(
            f"{path}, row {bad.index[0] + 1}: split {bad['split'].iloc[0]!r} is not one of {SPLIT_NAMES}."
        )
    mapping = dict(zip(sf[id_col], sf["split"], strict=True))
    missing = [r for r in table["report_id"] if r not in mapping]
    if missing:
        raise SplitError(
            f"{path}: {len(missing)} report(s) of the data table have no split, e.g. {missing[:3]}. "
            "Assign every report, or drop those reports from the table."
        )
    split = table["report_id"].map(mapping)
    per_patient = split.groupby(table["patient_id"]).nunique()
    leaking = per_patient[per_patient > 1]
    if len(leaking):
        raise SplitError(
            f"{path}: patient {leaking.index[0]!r} has reports in more than one split; "
            "splits must be by patient to prevent leakage."
        )
    return split


def assign_splits(
    table: pd.DataFrame,
    seed: int,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    n_folds: int | None = None,
    fold: int = 0,
    file: str | Path | None = None,
) -> pd.Series:
    """The split name of every row of ``table`` (one of train/val/test), by patient."""
    if file:
        return read_split_file(file, table)
    return table["patient_id"].map(split_patients(table["patient_id"], seed, fractions, n_folds, fold))


def split_patients(
    patient_ids: Sequence[str],
    seed: int,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    n_folds: int | None = None,
    fold: int = 0,
) -> dict[str, str]:
    """``{patient: split}``: patient-level k-fold when ``n_folds`` is given, else the fractions split."""
    if n_folds:
        return patient_kfold(patient_ids, seed, n_folds, fold)
    return patient_split(patient_ids, seed, fractions)


def exclude_holdout_patients(
    table: pd.DataFrame, holdouts: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Remove every report of a patient who appears in any hold-out set (paper Fig. 1: "after removing
    reports describing separate studies of patients in the test set"). Returns the table and the
    number of reports removed per hold-out, for the log."""
    removed: dict[str, int] = {}
    keep = np.ones(len(table), dtype=bool)
    for name, holdout in holdouts.items():
        hit = table["patient_id"].isin(set(holdout["patient_id"])).to_numpy()
        removed[name] = int((hit & keep).sum())
        keep &= ~hit
    return table.loc[keep].reset_index(drop=True), removed


def check_run_split(path: str | Path, splits: pd.DataFrame) -> None:
    """A run directory's ``splits.csv`` (columns ``id``, ``patient_id``, ``split``, written by the run
    that trained) against the split computed now by a resumed or test-only run in that directory.

    Refused: a row now in a development split (train/val/test) that was in another one, and a hold-out
    patient who trained or selected the model (train/val in the file): its hold-out scores would be
    flattering. Rows that left the development data for a hold-out, or hold-outs of new patients, pass:
    scoring a trained model on a new set is what a test-only run with ``data.holdouts`` is for.
    """
    before = pd.read_csv(path, dtype=str, keep_default_na=False)
    now = splits.astype(str)
    old = before.drop_duplicates("id").set_index("id")["split"]
    new = now.drop_duplicates("id").set_index("id")["split"]
    common = new.index.intersection(old.index)
    moved = [i for i in common if new[i] in SPLIT_NAMES and old[i] != new[i]]
    if moved:
        raise SplitError(
            f"{path}: {len(moved)} row(s) are in another split than when this run started (e.g. "
            f"{moved[0]!r}: {old[moved[0]]} -> {new[moved[0]]}); the seed, fractions or data changed. Resume "
            "with the original data and data.split settings, or start a new run."
        )
    fitted = set(before.loc[before["split"].isin(("train", "val")), "patient_id"])
    for name, rows in now[~now["split"].isin(SPLIT_NAMES)].groupby("split"):
        seen = sorted(set(rows["patient_id"]) & fitted)
        if seen:
            raise SplitError(
                f"data.holdouts.{name}: {len(seen)} patient(s) (e.g. {seen[0]!r}) trained or selected this "
                f"run's model (train/val in {path}); a hold-out must be patients the model has not seen."
            )
