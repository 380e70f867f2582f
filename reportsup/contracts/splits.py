"""The patient-level split protocol: one implementation for every DataModule (DESIGN.md, "Data contracts").

* Wood et al. 2021 (ALARM), "Modelling": a 60/20/20 split "at the patient level in order to prevent
  data leakage"; Fig. 1: the reports of hold-out patients (image-label test set, external site) are
  removed from the development data *before* the split is drawn.
* Liu et al. 2023 (Cross-DL), "Datasets": head-CT scans split "randomly ... by patient" (28,472 / 1,699 /
  1,607 scans, about 90/5/5 of the patients); the 4,807 report sentences split "randomly" (3,000 / 904
  / 903), not by patient. DESIGN.md allows a paper's own unit for its experiment: ``unit: row`` draws
  the rows themselves (sentences), ``unit: patient`` (the default everywhere else) the stricter
  patient-level split. Hold-out sets (prospective set, CQ500, the spine image test set) never share a
  patient with train/val/test, whatever the unit.

One entry point, :class:`SplitProtocol`::

    protocol = SplitProtocol.from_config(cfg.data.split, holdout_order="exclude_first")
    run_split = protocol.assign(rows, holdouts, source="reports.csv")  # rows: id, patient_id[, usable]
    run_split.save(run_dir)  # writes splits.csv, or checks it on a resumed / test-only run

Every drawn split is a pure function of ``(seed, fractions, patient ids)`` (or of ``(seed, n_folds,
fold, patient ids)``; with ``unit: row``, of the row ids): the ids are sorted before shuffling, so row order and duplicates in the
table do not change the assignment. Whether the draw happens before or after the hold-out patients
leave is ``holdout_order``, one explicit choice per experiment (``configs/data/*.yaml``):

* ``exclude_first`` (the ALARM paper): hold-out patients leave, then the split is drawn over the rest;
* ``split_first``: the split is drawn over every development patient, then hold-out patients leave, so
  a hold-out set added later (a test-only run scoring a trained model on a new set) moves nobody else.

``stratify: true`` (issue 22, item 1; default false, which keeps every earlier split unchanged) draws the
same fractions or folds per label stratum (:mod:`reportsup.contracts.stratify`: a patient's stratum is
the rarest label it is positive for), so a rare label keeps positives in every split. With or without
it, a split holding fewer than 5 positives of a label is logged as a warning naming the label and the
split, and recorded in ``data_summary.json`` (``stratification``).

This module is the bottom layer: pure pandas/numpy, it imports nothing else of ours but the contracts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reportsup.contracts.run_dir import DATA_SUMMARY, SPLITS_CSV, write_json
from reportsup.contracts.stratify import (
    few_positives,
    few_positives_message,
    rarest_positive,
    split_positives,
    stratified_deal,
    unit_positives,
)

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
HOLDOUT_ORDERS = ("exclude_first", "split_first")
#: the keys of ``data.split`` the protocol reads
CONFIG_KEYS = ("seed", "fractions", "n_folds", "fold", "file", "holdout_order", "unit", "stratify")
#: key of ``data_summary.json`` with the stratification and the positives of each label per split
SUMMARY_KEY = "stratification"
#: what one draw assigns as a whole: a patient (all their rows), or each row on its own (a paper's own unit)
UNITS = ("patient", "row")
#: optional boolean column of :meth:`SplitProtocol.assign`'s tables: False = the row takes no part
USABLE = "usable"
#: the split of a development row that is not usable (e.g. no known label) and of no hold-out patient
UNUSED = ""


class SplitError(ValueError):
    """A split request or split file that cannot be honoured; the message says what to change."""


# ----------------------------------------------------------------------------- the draws
def _shuffled_patients(patient_ids: Iterable[str], seed: int) -> np.ndarray:
    unique = np.array(sorted(set(patient_ids)), dtype=object)
    return unique[np.random.default_rng(seed).permutation(len(unique))]


def _check_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise SplitError(
            f"data.split.fractions={list(fractions)}: give three non-negative fractions "
            "(train, val, test) that sum to 1."
        )


def _check_folds(n_folds: int, fold: int) -> None:
    if n_folds < 3 or not 0 <= fold < n_folds:
        raise SplitError(
            f"data.split.n_folds={n_folds}, data.split.fold={fold}: need n_folds >= 3 "
            "(train, val and test folds) and 0 <= fold < n_folds."
        )


def patient_split(
    patient_ids: Sequence[str], seed: int, fractions: Sequence[float] = (0.6, 0.2, 0.2), unit: str = "patient"
) -> dict[str, str]:
    """Map each patient (each id: ``unit`` names what they are) to train/val/test with the given fractions
    of *patients*; the counts are rounded (the paper's 4,807 sentences at 0.6241/0.1881/0.1878 give
    exactly 3,000 / 904 / 903)."""
    _check_fractions(fractions)
    patients = _shuffled_patients(patient_ids, seed)
    n = len(patients)
    if n < 3:
        raise SplitError(
            f"only {n} {unit}(s) in the development data: a train/val/test split needs at least 3."
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
    _check_folds(n_folds, fold)
    folds = np.array_split(_shuffled_patients(patient_ids, seed), n_folds)
    val_fold = (fold + 1) % n_folds
    out = {}
    for k, members in enumerate(folds):
        name = "test" if k == fold else "val" if k == val_fold else "train"
        out.update({p: name for p in members})
    return out


def stratified_split(
    pos: pd.DataFrame,
    seed: int,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    n_folds: int | None = None,
    fold: int = 0,
    unit: str = "patient",
) -> dict[str, str]:
    """``{unit: split}`` drawn per stratum (``pos``: (unit x label) positives,
    :func:`reportsup.contracts.stratify.unit_positives`; a unit's stratum is its rarest positive label):
    the fractions, or k folds of which ``fold`` is the test and the next the validation fold, as the
    unstratified draws (issue 22, item 1)."""
    stratum = rarest_positive(pos)
    if n_folds:
        _check_folds(n_folds, fold)
        buckets = stratified_deal(stratum, seed, [1.0 / n_folds] * n_folds, pos)
        val_fold = (fold + 1) % n_folds
        return {u: "test" if k == fold else "val" if k == val_fold else "train" for u, k in buckets.items()}
    _check_fractions(fractions)
    if len(stratum) < 3:
        raise SplitError(
            f"only {len(stratum)} {unit}(s) in the development data: a train/val/test split needs at least 3."
        )
    return {u: SPLIT_NAMES[k] for u, k in stratified_deal(stratum, seed, fractions, pos).items()}


def split_patients(
    patient_ids: Sequence[str],
    seed: int,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    n_folds: int | None = None,
    fold: int = 0,
    unit: str = "patient",
) -> dict[str, str]:
    """``{patient: split}``: patient-level k-fold when ``n_folds`` is given, else the fractions split."""
    if n_folds:
        return patient_kfold(patient_ids, seed, n_folds, fold)
    return patient_split(patient_ids, seed, fractions, unit)


def read_split_file(path: str | Path, rows: pd.DataFrame, by_patient: bool = True) -> pd.Series:
    """A fixed split (CSV with ``id`` or ``report_id`` and ``split``) for ``rows`` (``id``,
    ``patient_id``), checked: every row must be assigned, split names must be train/val/test, and (when
    ``by_patient``) no patient may be in two splits. Returns the split of each row (``rows``' index)."""
    path = Path(path)
    if not path.exists():
        raise SplitError(f"{path}: split file not found (data.split.file).")
    sf = pd.read_csv(path, dtype=str, keep_default_na=False)
    id_col = "id" if "id" in sf.columns else "report_id" if "report_id" in sf.columns else None
    if id_col is None or "split" not in sf.columns:
        raise SplitError(
            f"{path}: a split file needs columns 'id' (or 'report_id') and 'split'; found {list(sf.columns)}."
        )
    # A run's own splits.csv also lists hold-out rows under their set's name: those rows are
    # ignored, unless they name a row of the development data.
    in_table = sf[id_col].isin(set(rows["id"]))
    bad = sf.loc[~sf["split"].isin(SPLIT_NAMES) & in_table]
    sf = sf.loc[sf["split"].isin(SPLIT_NAMES)]
    if len(bad):
        raise SplitError(
            f"{path}, row {bad.index[0] + 2}: split {bad['split'].iloc[0]!r} is not one of {SPLIT_NAMES}."
        )
    mapping = dict(zip(sf[id_col], sf["split"], strict=True))
    missing = [r for r in rows["id"] if r not in mapping]
    if missing:
        raise SplitError(
            f"{path}: {len(missing)} row(s) of the development data have no split, e.g. {missing[:3]}. "
            "Assign every row, or drop those rows from the data."
        )
    split = rows["id"].map(mapping)
    if not by_patient:
        return split
    per_patient = split.groupby(rows["patient_id"]).nunique()
    leaking = per_patient[per_patient > 1]
    if len(leaking):
        raise SplitError(
            f"{path}: patient {leaking.index[0]!r} has rows in more than one split; "
            "splits must be by patient to prevent leakage (data.split.unit=row allows it where a "
            "paper split rows at random)."
        )
    return split


def holdout_of(patient_ids: pd.Series, holdouts: Mapping[str, pd.DataFrame]) -> pd.Series:
    """For each row, the name of the first hold-out set (in ``holdouts``' order) that has its patient,
    or ``""``: every row of such a patient leaves the development data (paper Fig. 1: "after removing
    reports describing separate studies of patients in the test set")."""
    member = pd.Series(UNUSED, index=patient_ids.index, dtype=object)
    for name, holdout in holdouts.items():
        hit = patient_ids.isin(set(holdout["patient_id"])) & (member == UNUSED)
        member[hit] = name
    return member


# ----------------------------------------------------------------------------- checks
def check_learnable(targets: np.ndarray, labels: Sequence[str], source: str, what: str = "report") -> None:
    """Every label needs known positives and negatives in the training split, or it cannot be learnt.

    ``targets``: (training rows, labels), NaN where unknown; ``source`` names the data file."""
    for j, label in enumerate(labels):
        y = targets[:, j]
        known = y[~np.isnan(y)]
        if not len(known):
            raise SplitError(
                f"{source}: label '{label}' has no known value in the training split (the column "
                "is empty there). Fill it in or remove it from data.labels."
            )
        if known.min() == known.max():
            raise SplitError(
                f"{source}: label '{label}' is {int(known[0])} for every training {what} with a "
                f"known value: nothing to learn. Add {what}s of the other class or drop the label."
            )


def check_run_split(path: str | Path, splits: pd.DataFrame) -> None:
    """A run directory's ``splits.csv`` (columns ``id``, ``patient_id``, ``split``, written by the run
    that trained) against the split computed now by a resumed or test-only run in that directory.

    Refused: a row now in a development split (train/val/test) that was in another one, and a hold-out
    patient who trained or selected the model (train/val in the file): its hold-out scores would be
    flattering. Rows that left the development data for a hold-out, or hold-outs of new patients, pass:
    scoring a trained model on a new set is what a test-only run with ``data.holdouts`` is for.
    """
    before = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("id", "patient_id", "split") if c not in before.columns]
    if missing:
        raise SplitError(
            f"{path}: missing column(s) {missing} (found {list(before.columns)}); this is not a run's "
            "splits.csv. Remove it or start a new run in another directory."
        )
    now = splits.astype(str)
    old = before.drop_duplicates("id").set_index("id")["split"]
    new = now.drop_duplicates("id").set_index("id")["split"]
    common = new.index.intersection(old.index)
    moved = [i for i in common if new[i] in SPLIT_NAMES and old[i] != new[i]]
    if moved:
        raise SplitError(
            f"{path}: {len(moved)} row(s) are in another split than when this run started (e.g. "
            f"{moved[0]!r}: {old[moved[0]]} -> {new[moved[0]]}); the seed, fractions, stratify or data changed "
            "(or, with data.split.holdout_order=exclude_first, the hold-out sets). Resume with the original "
            "data, data.holdouts and data.split settings, or start a new run."
        )
    fitted = set(before.loc[before["split"].isin(("train", "val")), "patient_id"])
    for name, rows in now[~now["split"].isin(SPLIT_NAMES)].groupby("split"):
        seen = sorted(set(rows["patient_id"]) & fitted)
        if seen:
            raise SplitError(
                f"data.holdouts.{name}: {len(seen)} patient(s) (e.g. {seen[0]!r}) trained or selected this "
                f"run's model (train/val in {path}); a hold-out must be patients the model has not seen."
            )


# ----------------------------------------------------------------------------- the protocol
def _id_frame(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """``id``, ``patient_id`` (as text, so ids read as numbers in one file match another's) and
    ``usable`` (all True unless given) of a table."""
    missing = [c for c in ("id", "patient_id") if c not in table.columns]
    if missing:
        raise SplitError(f"{what}: missing column(s) {missing} for the split; found {list(table.columns)}.")
    usable = table[USABLE].astype(bool) if USABLE in table.columns else True
    return pd.DataFrame(
        {"id": table["id"].astype(str), "patient_id": table["patient_id"].astype(str), USABLE: usable},
        index=table.index,
    )


@dataclass(frozen=True)
class RunSplit:
    """The outcome of :meth:`SplitProtocol.assign`.

    ``split`` (index of the development rows given): ``train``/``val``/``test``; the name of the
    hold-out set whose patient the row belongs to (the row left the development data); or ``""``
    (:data:`UNUSED`) for a row that was not usable. ``holdout_rows``: ``id``, ``patient_id``, ``split``
    (= the set's name) of the usable rows of every hold-out set.
    """

    rows: pd.DataFrame
    split: pd.Series
    holdout_rows: pd.DataFrame
    holdout_names: tuple[str, ...]
    source: str
    what: str = "rows"
    #: ``data_summary.json``'s ``stratification``: the setting, strata sizes, positives per split and label,
    #: and the splits with fewer than 5 positives of a label (empty when no labels were given)
    stratification: Mapping[str, Any] = field(default_factory=dict)

    def mask(self, name: str) -> np.ndarray:
        """Boolean array over the development rows: in split (or hold-out, or ``""``) ``name``."""
        return (self.split == name).to_numpy()

    def removed(self, where: np.ndarray | None = None) -> dict[str, int]:
        """Development rows (all, or those in ``where``) that left for each hold-out set, for the log."""
        where = np.ones(len(self.split), dtype=bool) if where is None else np.asarray(where, dtype=bool)
        return {name: int((self.mask(name) & where).sum()) for name in self.holdout_names}

    def require(
        self, names: Sequence[str] = SPLIT_NAMES, where: np.ndarray | None = None, what: str | None = None
    ) -> None:
        """Refuse an empty split among ``names`` (counting the rows in ``where``, default all)."""
        where = np.ones(len(self.split), dtype=bool) if where is None else np.asarray(where, dtype=bool)
        what = what or self.what
        dev = self.split.isin(SPLIT_NAMES).to_numpy() & where
        for name in names:
            if not (self.mask(name) & where).any():
                raise SplitError(
                    f"{self.source}: the {name} split is empty ({int(dev.sum())} {what} of "
                    f"{self.rows.loc[dev, 'patient_id'].nunique()} patients in the development data, "
                    "after hold-out patients left): add data or change data.split (seed, fractions, "
                    "n_folds or file)."
                )

    @classmethod
    def concat(cls, parts: Sequence[RunSplit], source: str, what: str = "rows") -> RunSplit:
        """Several draws over the same hold-outs (e.g. sentences by row, reports by patient) as one split:
        rows and their splits in ``parts``' order, the hold-out rows once."""
        if len({p.holdout_names for p in parts}) > 1:
            raise ValueError("RunSplit.concat: the parts were drawn with different hold-out sets.")
        # Each part's stratification under its source (e.g. the sentences, then the reports).
        stratification = {p.source: dict(p.stratification) for p in parts if p.stratification}
        return cls(
            pd.concat([p.rows for p in parts], ignore_index=True),
            pd.concat([p.split for p in parts], ignore_index=True),
            pd.concat([p.holdout_rows for p in parts], ignore_index=True).drop_duplicates(ignore_index=True),
            parts[0].holdout_names,
            source,
            what,
            stratification if len(stratification) != 1 else next(iter(stratification.values())),
        )

    def table(self) -> pd.DataFrame:
        """The rows of ``splits.csv``: ``id``, ``patient_id``, ``split`` of every development row still in
        train/val/test, then of every hold-out row (under its set's name)."""
        dev = self.split.isin(SPLIT_NAMES)
        frames = [self.rows.loc[dev, ["id", "patient_id"]].assign(split=self.split[dev]), self.holdout_rows]
        out = pd.concat(frames, ignore_index=True)
        shared = set(out.loc[out["split"].isin(SPLIT_NAMES), "patient_id"]) & set(
            self.holdout_rows["patient_id"]
        )
        if shared:  # cannot happen by construction; a bug here would leak a hold-out patient
            raise SplitError(f"{self.source}: patient(s) {sorted(shared)[:3]} in a hold-out and a split.")
        return out

    def save(self, run_dir: str | Path, data_summary: Mapping[str, Any] | None = None) -> Path:
        """Write ``run_dir/splits.csv``; if it exists (a resumed or test-only run), check the split
        against it instead (:func:`check_run_split`): the run keeps the split it trained on. With
        ``data_summary``, also write it as ``data_summary.json`` (what every DataModule read, kept and left
        out), after the check, so a refused resume leaves the earlier run's summary in place."""
        path = Path(run_dir) / SPLITS_CSV
        table = self.table()
        if path.exists():
            check_run_split(path, table)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(path, index=False)
        if data_summary is not None:
            summary = dict(data_summary)
            if self.stratification:
                summary.setdefault(SUMMARY_KEY, self.stratification)
            write_json(Path(run_dir) / DATA_SUMMARY, summary)
        return path


@dataclass(frozen=True)
class SplitProtocol:
    """The split of one experiment: a seeded draw (fractions or k-fold) of patients (``unit="patient"``)
    or of rows (``unit="row"``), or a fixed split file, and the order of the hold-out exclusion (module
    docstring). Build it with :meth:`from_config` from ``data.split``; :meth:`assign` applies it."""

    holdout_order: str
    seed: int = 0
    fractions: tuple[float, ...] = (0.6, 0.2, 0.2)
    n_folds: int | None = None
    fold: int = 0
    file: str | None = None
    unit: str = "patient"
    #: draw per label stratum (issue 22 item 1); False keeps the plain draw, so earlier splits stay identical
    stratify: bool = False

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise SplitError(
                f"data.split.unit={self.unit!r}: choose patient (every row of a patient in one split) or row "
                "(rows drawn on their own, where a paper split e.g. sentences at random)."
            )
        if self.holdout_order not in HOLDOUT_ORDERS:
            raise SplitError(
                f"data.split.holdout_order={self.holdout_order!r}: choose exclude_first (hold-out patients "
                "leave before the split is drawn, as the ALARM paper) or split_first (drawn over every "
                "development patient first, so a hold-out added later moves nobody)."
            )
        if self.n_folds:
            _check_folds(self.n_folds, self.fold)
        else:
            _check_fractions(self.fractions)

    @classmethod
    def from_config(cls, split: Mapping[str, Any] | None, holdout_order: str) -> SplitProtocol:
        """From ``data.split`` (keys :data:`CONFIG_KEYS`); ``holdout_order`` is the experiment's default
        when the config does not name one."""
        cfg = dict(split or {})
        unknown = sorted(set(cfg) - set(CONFIG_KEYS))
        if unknown:
            raise SplitError(f"data.split: unknown key(s) {unknown}; the keys are {list(CONFIG_KEYS)}.")
        try:
            values = {
                "seed": int(cfg.get("seed") or 0),
                "fractions": tuple(float(f) for f in (cfg.get("fractions") or (0.6, 0.2, 0.2))),
                "n_folds": int(cfg["n_folds"]) if cfg.get("n_folds") else None,
                "fold": int(cfg.get("fold") or 0),
            }
        except (TypeError, ValueError) as err:
            raise SplitError(
                f"data.split={cfg}: {err}; seed, n_folds and fold are integers, fractions three numbers."
            ) from None
        stratify = cfg.get("stratify") or False
        if not isinstance(stratify, bool):  # "false" from a hand-edited YAML string would be truthy
            raise SplitError(f"data.split.stratify={stratify!r}: give true or false.")
        return cls(
            holdout_order=str(cfg.get("holdout_order") or holdout_order),
            file=str(cfg["file"]) if cfg.get("file") else None,
            unit=str(cfg.get("unit") or "patient"),
            stratify=stratify,
            **values,
        )

    def assign(
        self,
        rows: pd.DataFrame,
        holdouts: Mapping[str, pd.DataFrame] | None = None,
        *,
        source: str,
        required: Sequence[str] = SPLIT_NAMES,
        what: str = "rows",
        labels: pd.DataFrame | None = None,
    ) -> RunSplit:
        """Split the development ``rows`` by patient and remove every row of a hold-out patient.

        Args:
            rows: ``id``, ``patient_id`` and optionally ``usable`` (bool): rows with False (e.g. no
                known label) take no part in the draw and are not written to ``splits.csv``.
            holdouts: ``{name: table}`` with ``id``, ``patient_id`` and optionally ``usable``: all their
                patients leave the development data (an unusable row's patient too); their usable rows
                are listed in ``splits.csv`` under the set's name.
            source: the data file, named in error messages.
            required: splits that must not be empty (the spine image DataModule has no internal test).
            what: what a row is, for messages ("reports", "scans", ...).
            labels: the rows' label values (same index as ``rows``, one column per label, NaN unknown):
                the strata of ``stratify`` and the count of positives per split (a warning below 5).
                Required with ``stratify``.
        """
        if self.stratify and labels is None and not self.file:
            raise SplitError(
                f"{source}: data.split.stratify=true needs the label of every row, and this data gives none "
                "to the split; set data.split.stratify=false."
            )
        if labels is not None and len(labels) != len(rows):
            raise ValueError(f"SplitProtocol.assign: {len(labels)} label rows for {len(rows)} rows.")
        dev = _id_frame(rows, source)
        held = {}
        for name, table in (holdouts or {}).items():
            if not name or name in SPLIT_NAMES:
                raise SplitError(
                    f"data.holdouts.{name}: {name!r} names a development split; give the hold-out another name."
                )
            held[name] = _id_frame(table, f"data.holdouts.{name}")
        member = holdout_of(dev["patient_id"], held)
        stays = member == UNUSED
        usable = dev[USABLE]
        strata_sizes: dict[str, int] | None = None  # units per stratum, when stratified
        if self.file:
            if self.stratify:  # not an error: a chain of runs reuses the first run's (stratified) splits.csv
                log.warning(
                    f"[reportsup] data.split.file={self.file} is a fixed split: data.split.stratify=true draws "
                    "nothing here (the positives per split are still checked)."
                )
            # No draw: the order cannot move anyone, and a run's own splits.csv (a valid split file)
            # lists no development row of a hold-out patient. So hold-out patients always leave first.
            split = pd.Series(UNUSED, index=dev.index, dtype=object)
            split[usable & stays] = read_split_file(
                self.file, dev.loc[usable & stays], by_patient=self.unit == "patient"
            )
        else:
            drawn = usable & stays if self.holdout_order == "exclude_first" else usable
            group = "patient_id" if self.unit == "patient" else "id"
            if self.stratify:
                pos = unit_positives(dev.loc[drawn, group], labels.set_axis(dev.index).loc[drawn])
                counts = rarest_positive(pos).value_counts().sort_index()
                strata_sizes = {str(k): int(v) for k, v in counts.items()}
                mapping = stratified_split(pos, self.seed, self.fractions, self.n_folds, self.fold, self.unit)
            else:
                mapping = split_patients(
                    dev.loc[drawn, group], self.seed, self.fractions, self.n_folds, self.fold, self.unit
                )
            split = dev[group].map(mapping).where(usable, UNUSED)
        split = split.where(stays, member).astype(object)
        holdout_rows = pd.concat(
            [h.loc[h[USABLE], ["id", "patient_id"]].assign(split=name) for name, h in held.items()]
            or [pd.DataFrame(columns=["id", "patient_id", "split"])],
            ignore_index=True,
        )
        stratification = (
            self._check_positives(split, labels.set_axis(dev.index), what, strata_sizes)
            if labels is not None
            else {}
        )
        result = RunSplit(dev, split, holdout_rows, tuple(held), source, what, stratification)
        result.require(required)
        return result

    def _check_positives(
        self, split: pd.Series, labels: pd.DataFrame, what: str, strata_sizes: Mapping[str, int] | None
    ) -> dict[str, Any]:
        """Positives of each label in each split; a logged warning per split with fewer than 5 of a label
        (issue 22 item 1), returned for ``data_summary.json``."""
        counts = split_positives(split, labels, SPLIT_NAMES)
        found = few_positives(counts)
        stratified = self.stratify and not self.file  # a split file is not drawn, whatever stratify says
        for line in few_positives_message(found, what, stratified):
            log.warning(line)
        out: dict[str, Any] = {"stratify": stratified, "unit": self.unit}
        if strata_sizes is not None:
            out["strata"] = dict(strata_sizes)  # units per stratum (rarest positive label, or negative)
        out["positives"] = counts
        out["few_positives"] = found
        return out
