"""Label-stratified draws for the split protocol (issue 22, item 1: "rare labels keep their positives").

``data.split.stratify=true`` makes :class:`reportsup.contracts.splits.SplitProtocol` draw its split per
*stratum* instead of over all patients at once, so each split (or fold) holds its share of every
label's positive patients:

* a unit (a patient, or a row with ``unit: row``) is kept whole, as without stratification;
* its stratum is the **rarest** label it is positive for (rarest = fewest positive units among those
  drawn), or ``"negative"``: a multi-label patient is placed by the label that most needs spreading,
  the frequent labels balance themselves over the many patients they have (the issue's "multi-label by
  the rarest label a patient has");
* within a stratum each split receives the floor or the ceiling of its share of the units (a 12-patient
  stratum at 60/20/20 gets 7/2/2 and one extra); the extra ones go to the split furthest below its overall
  target, so the split sizes stay those of the unstratified draw within a unit or so;
* which unit of a stratum goes where: the units are shuffled (seeded), then each in turn goes to the split,
  among those with room left in the stratum, that still lacks most of the *other* labels the unit is
  positive for (the iterative stratification of Sechidis et al. 2011, "On the stratification of
  multi-label data", restricted to the stratum's quotas), so the more frequent co-occurring labels are
  balanced too, not left to chance. Strata are dealt rarest first.

Why not scikit-learn's ``StratifiedGroupKFold``: it makes k equal folds only, so it cannot give the
papers' fractions (ALARM 60/20/20 is 5 folds, but Cross-DL's 90/5/5 would be 20 and the sentences'
0.6241/0.1881/0.1878 none), and its greedy placement exists for groups whose rows carry *different*
classes; here every unit has exactly one stratum, so the per-stratum deal above is exact (floor/ceil of
each share) and needs no search. k-fold (``n_folds``) uses the same deal with k equal shares.

A positive is a label value of at least 0.5 (1 in reference labels; a soft or machine label counts from
0.5); NaN (unknown) is not positive. Pure numpy/pandas: the contracts are the bottom layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

#: the stratum of a unit positive for no label
NEGATIVE = "negative"
#: fewer positives of a label than this in a split: a warning (issue 22 item 1)
MIN_POSITIVES = 5


def positives(labels: pd.DataFrame) -> pd.DataFrame:
    """Boolean frame: the value is a positive (>= 0.5; NaN, i.e. unknown, is not)."""
    return labels.apply(pd.to_numeric, errors="coerce").fillna(0.0) >= 0.5


def unit_positives(groups: pd.Series, labels: pd.DataFrame) -> pd.DataFrame:
    """(unit x label) booleans, units sorted: the unit is positive for the label in any of its rows.

    ``groups``: the unit of each row (patient id, or the row id with ``unit: row``); ``labels``: the
    rows' label values, same index as ``groups``."""
    return positives(labels).groupby(groups.to_numpy()).any().sort_index()


def strata(groups: pd.Series, labels: pd.DataFrame) -> pd.Series:
    """The stratum of each unit (index: the unique values of ``groups``, sorted): the rarest label the unit
    is positive for in any of its rows, or :data:`NEGATIVE` (:func:`unit_positives`). Ties in rarity go
    to the label listed first."""
    return rarest_positive(unit_positives(groups, labels))


def rarest_positive(pos: pd.DataFrame) -> pd.Series:
    """The stratum of each unit of a :func:`unit_positives` frame."""
    counts = pos.sum(axis=0).to_numpy()
    columns = list(pos.columns)
    # Most frequent first, so the rarest label a unit has is written last and wins.
    order = sorted(range(len(columns)), key=lambda j: (counts[j], j), reverse=True)
    stratum = pd.Series(NEGATIVE, index=pos.index, dtype=object)
    for j in order:
        stratum[pos.iloc[:, j].to_numpy()] = str(columns[j])
    return stratum


def stratified_deal(
    stratum: pd.Series, seed: int, shares: Sequence[float], pos: pd.DataFrame | None = None
) -> dict[str, int]:
    """``{unit: bucket}``: every stratum's units dealt to the buckets by ``shares`` (each bucket gets the
    floor or ceiling of its share of the stratum; the extra units go to the buckets furthest below their
    overall target), rarest strata first. With ``pos`` (:func:`unit_positives`, same units), each unit goes
    to the bucket with room that lacks most of the labels it is positive for (module docstring); without,
    in shuffled order. A pure function of the seed, the shares and the units' strata and labels (units are
    sorted before shuffling)."""
    shares_arr = np.asarray(shares, dtype=float)
    rng = np.random.default_rng(seed)
    if pos is None:
        pos = pd.DataFrame(index=stratum.index)
    pos = pos.reindex(stratum.index).fillna(False).astype(bool)
    # Positives of each label each bucket still lacks (target minus dealt), as a share of the label's
    # positives so that a rare and a frequent label weigh alike.
    n_pos = pos.sum(axis=0).to_numpy(dtype=float)
    lacking = np.outer(shares_arr, n_pos)
    scale = 1.0 / np.maximum(n_pos, 1.0)
    sizes = stratum.value_counts()
    names = sorted(sizes.index, key=lambda s: (sizes[s], str(s)))
    assigned = np.zeros(len(shares_arr))
    out: dict[str, int] = {}
    for name in names:
        units = np.array(sorted(stratum.index[stratum == name]), dtype=object)
        units = units[rng.permutation(len(units))]
        m = len(units)
        counts = np.floor(shares_arr * m + 1e-9).astype(int)
        extra = m - int(counts.sum())
        if extra:
            # The split furthest below its overall target takes the remainder; a random tie-break so no
            # split is always favoured (zero-share buckets, e.g. the spine's test, never take any).
            deficit = shares_arr * (assigned.sum() + m) - (assigned + counts)
            deficit[shares_arr <= 0] = -np.inf
            ranked = np.lexsort((rng.random(len(shares_arr)), -deficit))
            counts[ranked[:extra]] += 1
        room = counts.copy()
        for unit in units:
            has = pos.loc[unit].to_numpy()
            need = (lacking[:, has] * scale[has]).sum(axis=1) if has.any() else np.zeros(len(room))
            need = np.where(room > 0, need, -np.inf)
            # most lacking first; then the most room left; then chance
            bucket = int(np.lexsort((rng.random(len(room)), -room, -need))[0])
            out[unit] = bucket
            room[bucket] -= 1
            lacking[bucket, has] -= 1
        assigned += counts
    return out


def split_positives(
    split: pd.Series, labels: pd.DataFrame, names: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Positive rows of each label in each of ``names`` that holds any row: ``{split: {label: n}}``."""
    pos = positives(labels)
    return {
        name: {str(label): int(pos.loc[split == name, label].sum()) for label in pos.columns}
        for name in names
        if (split == name).any()
    }


def few_positives(counts: Mapping[str, Mapping[str, int]], minimum: int = MIN_POSITIVES) -> list[dict]:
    """``[{split, label, positives}]`` for every split holding fewer than ``minimum`` positives of a label."""
    return [
        {"split": name, "label": label, "positives": n}
        for name, per_label in counts.items()
        for label, n in per_label.items()
        if n < minimum
    ]


def few_positives_message(
    found: Sequence[Mapping], what: str, stratified: bool, minimum: int = MIN_POSITIVES, shown: int = 8
) -> list[str]:
    """One log line per split with too few positives, naming the split and its labels (count in brackets)."""
    lines = []
    for name in dict.fromkeys(f["split"] for f in found):
        hits = [f for f in found if f["split"] == name]
        listed = ", ".join(f"'{f['label']}' ({f['positives']})" for f in hits[:shown])
        more = (
            f" and {len(hits) - shown} more (data_summary.json: stratification)" if len(hits) > shown else ""
        )
        fix = (
            "even stratified: add positive cases of these labels or give this split a larger fraction"
            if stratified
            else "set data.split.stratify=true to spread each label's positive patients over the splits"
        )
        lines.append(
            f"[reportsup] data.split: the {name} split holds fewer than {minimum} positive {what} of label(s) "
            f"{listed}{more}; their {name} metrics rest on few cases (wide CIs, AUROC undefined at 0): {fix}."
        )
    return lines
