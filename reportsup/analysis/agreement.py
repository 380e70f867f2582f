"""Inter-rater agreement: Fleiss' kappa per label (ALARM paper, Table 2).

Wood et al. 2021 (ALARM): "Fleiss' kappa [25] was used to measure interrater reliability" (Fleiss
1971). Two neuroradiologists labelled 3000 reports normal/abnormal and three labelled 2000 reports for
7 categories, one binary label each; Table 2 gives one kappa per category (0.79 to 0.94).

For N items, each rated n times into categories j, with n_ij the number of ratings of item i in j:
``P_i = (sum_j n_ij^2 - n) / (n (n - 1))``, ``P-bar = mean_i P_i`` (observed agreement),
``p_j = sum_i n_ij / (N n)``, ``P-bar_e = sum_j p_j^2`` (chance agreement) and
``kappa = (P-bar - P-bar_e) / (1 - P-bar_e)``; computed with ``statsmodels.stats.inter_rater``
(``aggregate_raters``, ``fleiss_kappa(method="fleiss")``).

Fleiss' kappa needs the same number of ratings n >= 2 for every item, but not the same raters: which
of the paper's 6 neuroradiologists rated a report does not enter the formula. Items with another
number of ratings, or one rater rating an item twice, raise ``ValueError`` naming the items. When every
rating of every item falls in one category, ``P-bar_e = 1`` and kappa is 0/0: reported as ``nan``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

SHOW = 10  # how many offending items a message names


def _names(values: Sequence[Any]) -> str:
    shown = ", ".join(str(v) for v in values[:SHOW])
    return shown + (f", ... (+{len(values) - SHOW} more)" if len(values) > SHOW else "")


def _python(value: Any) -> Any:
    """numpy scalars as plain Python values, so results serialise to JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _is_missing(series: pd.Series) -> pd.Series:
    return series.isna() | (series.astype(str).str.strip() == "")


def _check_columns(annotations: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in annotations.columns]
    if missing:
        raise ValueError(
            f"no column {', '.join(repr(c) for c in missing)}; the table has "
            f"{', '.join(repr(str(c)) for c in annotations.columns)}."
        )


def rating_matrix(
    annotations: pd.DataFrame, item_column: str, rater_column: str, label_column: str
) -> pd.DataFrame:
    """Long format (one row per item x rater) to wide: items x raters, ``NaN`` where a rater did not rate.

    Raises ``ValueError`` for a missing column, an empty item, rater or label, or a rater who rated
    the same item more than once (each is named).
    """
    _check_columns(annotations, [item_column, rater_column, label_column])
    for column in (item_column, rater_column):
        empty = annotations.index[_is_missing(annotations[column])]
        if len(empty):
            raise ValueError(f"{len(empty)} row(s) have no '{column}' (index {_names(list(empty))}).")
    no_label = annotations[_is_missing(annotations[label_column])]
    if len(no_label):
        pairs = [f"{i}/{r}" for i, r in zip(no_label[item_column], no_label[rater_column], strict=True)]
        raise ValueError(
            f"{len(pairs)} rating(s) have no '{label_column}' (item/rater {_names(pairs)}). Fleiss' kappa "
            "needs every rating; fill them in or remove those items."
        )
    twice = annotations[annotations.duplicated([item_column, rater_column], keep=False)]
    if len(twice):
        pairs = sorted({f"{i}/{r}" for i, r in zip(twice[item_column], twice[rater_column], strict=True)})
        raise ValueError(
            f"{len(pairs)} item/rater pair(s) occur more than once ({_names(pairs)}); keep one rating "
            f"per rater per item for '{label_column}'."
        )
    # Object dtype keeps 0/1 labels as ints where raters are missing (NaN would make them floats).
    return annotations.astype({label_column: object}).pivot(
        index=item_column, columns=rater_column, values=label_column
    )


def fleiss_kappa_from_matrix(matrix: pd.DataFrame) -> dict[str, Any]:
    """Fleiss' kappa of a wide table: one row per item, one column per rater, ``NaN`` = not rated.

    Returns ``kappa``, ``observed_agreement`` (P-bar), ``expected_agreement`` (P-bar_e),
    ``n_items``, ``n_ratings_per_item``, ``n_raters`` (distinct raters who rated anything),
    ``categories`` and ``category_proportions`` (p_j, in the order of ``categories``).
    """
    if matrix.shape[0] == 0:
        raise ValueError("no items to compute Fleiss' kappa on.")
    rated = matrix.notna()
    per_item = rated.sum(axis=1)
    frequency = per_item.value_counts()
    n = int(max(frequency.index[frequency == frequency.max()]))  # the usual count; on a tie, the larger
    odd = per_item[per_item != n]
    if len(odd):
        raise ValueError(
            f"items have unequal numbers of ratings: {int((per_item == n).sum())} item(s) have {n}, but "
            f"{_names([f'{i} ({c})' for i, c in odd.items()])}. Fleiss' kappa needs the same number of "
            "ratings for every item; remove or complete those items."
        )
    if n < 2:
        raise ValueError(
            f"every item has {n} rating(s); agreement needs at least 2 raters per item "
            f"(raters: {_names([str(c) for c in matrix.columns[rated.any()]])})."
        )
    # Fleiss' kappa ignores rater identity: each row becomes the n labels that item received.
    labels = np.array([row[row.notna()].to_list() for _, row in matrix.iterrows()], dtype=object)
    try:
        counts, categories = aggregate_raters(labels)
    except TypeError as err:
        raise ValueError(
            f"labels mix types that cannot be compared ({err}); use one type, e.g. 0/1."
        ) from err
    n_items = counts.shape[0]
    proportions = counts.sum(axis=0) / (n_items * n)
    observed = float(((counts**2).sum(axis=1) - n).mean() / (n * (n - 1)))
    expected = float((proportions**2).sum())
    # One category for everything: chance agreement is 1 and kappa 0/0 (statsmodels would warn).
    kappa = float(fleiss_kappa(counts, method="fleiss")) if expected < 1 else float("nan")
    return {
        "kappa": kappa,
        "observed_agreement": observed,
        "expected_agreement": expected,
        "n_items": int(n_items),
        "n_ratings_per_item": n,
        "n_raters": int(rated.any().sum()),
        "categories": [_python(c) for c in categories],
        "category_proportions": [float(p) for p in proportions],
    }


def fleiss_kappa_table(
    annotations: pd.DataFrame, item_column: str, rater_column: str, label_column: str
) -> dict[str, Any]:
    """Fleiss' kappa of long-format annotations (one row per item x rater); see
    :func:`fleiss_kappa_from_matrix` for the result and :func:`rating_matrix` for the checks."""
    return fleiss_kappa_from_matrix(rating_matrix(annotations, item_column, rater_column, label_column))


def fleiss_kappa_per_label(
    annotations: pd.DataFrame, item_column: str, rater_column: str, label_columns: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """One Fleiss' kappa per label column of multi-label annotations (paper Table 2: one per category).

    Each row is one rater's labels for one item (e.g. 0/1 per category). Errors name the label.
    """
    if not label_columns:
        raise ValueError("no label columns given.")
    _check_columns(annotations, [item_column, rater_column, *label_columns])
    out = {}
    for label in label_columns:
        try:
            out[label] = fleiss_kappa_table(annotations, item_column, rater_column, label)
        except ValueError as err:
            raise ValueError(f"label '{label}': {err}") from err
    return out


def kappa_markdown(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: one row per label with kappa, P-bar, P-bar_e, items and ratings per item."""
    lines = [
        "| label | Fleiss kappa | observed agreement | chance agreement | items | ratings per item |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        kappa = "n/a (one category only)" if np.isnan(r["kappa"]) else f"{r['kappa']:.3f}"
        lines.append(
            f"| {label} | {kappa} | {r['observed_agreement']:.3f} | {r['expected_agreement']:.3f} "
            f"| {r['n_items']} | {r['n_ratings_per_item']} |"
        )
    return "\n".join(lines)
