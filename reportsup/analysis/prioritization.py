"""Review prioritization with the analyzer's abnormality scores (Liu et al. 2023, "The analyzer could
detect various diseases and help prioritization", Figure 5 and S5; STAR Methods "Quantification and
statistical analysis").

The paper's protocol, on its preoperative set (1,204 scans, 12 diseases labelled per scan):

* **Abnormality score** of a scan: the maximum prediction over all voxels and the four abnormality
  types (Fig. 5A), or over one type's map (Fig. 5B, S5). The analyzer's scan-level probability of a
  type is already the maximum of that type's map (``scan__<type>_prob`` in ``predictions_<set>.csv``,
  ``scan__<type>`` in ``reportsup-damil-predict``'s ``predictions.csv``), so the "any" score is their
  maximum (:data:`ANY`).
* **Ranking**: all scans of the set sorted by the score in descending order; rank 1 = the most
  abnormal scan (:func:`abnormality_ranks`; tied scores share their average rank, the convention of the
  rank-sum test). The rank percentile is ``100 (rank - 1) / (N - 1)``: 0 = the most abnormal scan of
  the set, 100 = the least.
* **Per disease**: the number and ratio of its scans ("the positive ratio of each disease is labeled
  next to the disease name"), the quartiles of their ranks (Q1, median, Q3; numpy's linear
  interpolation, Hyndman-Fan type 7), and a one-sided Wilcoxon rank-sum test "to check if the rankings
  of CTs with a certain disease are higher than those without the disease" (the disease's scans
  against every other scan of the set, not only the disease-free ones), significant at p < 0.001. The
  row ``any`` is the union of the diseases (a scan with at least one). Diseases are listed by median
  rank, best first, ``any`` last, as in Fig. 5A.

The test is :func:`scipy.stats.mannwhitneyu` (``alternative="greater"`` on the scores: the rank-sum W of
the disease's scans and U differ by n1 (n1 + 1) / 2, so they are the same test). The paper names SciPy
and the test but not the function; ``method="auto"`` uses the exact null distribution of U when a group
has at most 8 scans and no score is tied, else the normal approximation with tie and continuity
corrections (``scipy.stats.ranksums``, the other SciPy spelling, has neither correction; at the
paper's sizes they agree to the reported precision). ``auroc`` = U / (n1 n0), the same statistic on
the probability scale.

:func:`prioritization` is the single-label form the DaMIL evaluator writes to ``metrics.json`` (per
scan-level type and ``any``, with the scan labels as the "disease"); :func:`disease_prioritization` is
the disease-table form behind ``reportsup-prioritization``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu, rankdata

from reportsup.contracts.run_dir import PREDICTIONS_PREFIX, prediction_sets, predictions_csv

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: the paper's significance threshold (STAR Methods: "a significance threshold of p < 0.001")
PAPER_ALPHA = 0.001
#: the union row (a scan with at least one disease) and the score over all four types (Fig. 5A)
ANY = "any"
SCAN_ID = "scan_id"
#: the file ``reportsup-damil-predict`` writes into its --out-dir
DAMIL_PREDICT_CSV = "predictions.csv"
SHOW = 10  # how many offending ids or rows a message names

RESULT_COLUMNS = (
    "score",
    "disease",
    "n_scans",
    "n_total",
    "positive_ratio",
    "q1_rank",
    "median_rank",
    "q3_rank",
    "q1_percentile",
    "median_percentile",
    "q3_percentile",
    "mean_rank",
    "mean_rank_without",
    "u_statistic",
    "auroc",
    "p_value",
    "significant",
    "note",
)


class PrioritizationInputError(ValueError):
    """A disease table or a predictions file that cannot be used; the message names the file, the row or
    column, and the fix."""


def _listed(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:SHOW])
    return shown + (f", ... (+{len(items) - SHOW} more)" if len(items) > SHOW else "")


# --- ranks and the test ------------------------------------------------------------------------------


def abnormality_ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of every scan in the descending order of ``scores``: 1 = the highest score; ties share the
    average of their ranks (e.g. scores 0.9, 0.5, 0.5, 0.1 -> 1, 2.5, 2.5, 4)."""
    return rankdata(-np.asarray(scores, dtype=float), method="average")


def rank_percentiles(ranks: np.ndarray, n_total: int) -> np.ndarray:
    """``100 (rank - 1) / (N - 1)``: 0 = the most abnormal scan of N, 100 = the least (0 when N = 1)."""
    ranks = np.asarray(ranks, dtype=float)
    return np.zeros_like(ranks) if n_total <= 1 else 100.0 * (ranks - 1) / (n_total - 1)


def rank_test(scores: np.ndarray, has: np.ndarray, method: str = "auto") -> dict[str, float]:
    """Rank summaries and the one-sided rank-sum test of the scans with (``has``) against those without.

    Returns ``n_scans``, ``n_total``, ``positive_ratio``, the rank quartiles ``q1_rank``,
    ``median_rank``, ``q3_rank`` (and as percentiles), ``mean_rank`` and ``mean_rank_without``, and,
    when both groups are non-empty, ``u_statistic`` (U of the scans with), ``auroc`` = U / (n1 n0) and
    ``p_value`` (H1: their scores are stochastically greater); NaN for what is undefined.
    """
    scores = np.asarray(scores, dtype=float)
    has = np.asarray(has).astype(bool)
    n_total, n_with = len(scores), int(has.sum())
    ranks = abnormality_ranks(scores)
    nan = float("nan")
    out: dict[str, float] = {
        "n_scans": n_with,
        "n_total": n_total,
        "positive_ratio": n_with / n_total if n_total else nan,
    }
    if n_with:
        q1, median, q3 = np.percentile(ranks[has], [25, 50, 75])
        p1, p_median, p3 = rank_percentiles(np.array([q1, median, q3]), n_total)
        out.update(
            q1_rank=float(q1),
            median_rank=float(median),
            q3_rank=float(q3),
            q1_percentile=float(p1),
            median_percentile=float(p_median),
            q3_percentile=float(p3),
            mean_rank=float(ranks[has].mean()),
        )
    else:
        out.update(dict.fromkeys(("q1_rank", "median_rank", "q3_rank", "mean_rank"), nan))
        out.update(dict.fromkeys(("q1_percentile", "median_percentile", "q3_percentile"), nan))
    out["mean_rank_without"] = float(ranks[~has].mean()) if n_with < n_total else nan
    if 0 < n_with < n_total:
        test = mannwhitneyu(scores[has], scores[~has], alternative="greater", method=method)
        out["u_statistic"] = float(test.statistic)
        out["auroc"] = float(test.statistic) / (n_with * (n_total - n_with))
        out["p_value"] = float(test.pvalue)
    else:
        out.update(u_statistic=nan, auroc=nan, p_value=nan)
    return out


def prioritization(
    scores: np.ndarray, has_disease: np.ndarray, method: str = "auto"
) -> dict[str, dict[str, float]]:
    """Do scans with the abnormality rank higher? :func:`rank_test` in ``metrics.json``'s form
    (``{name: {"value": v}}``): the U statistic, the one-sided p-value, the mean rank (1 = highest
    score) of each group, the rank quartiles of the scans with it, and the group sizes (Fig. 5, S5).
    ``{}`` when either group is empty (no test)."""
    has = np.asarray(has_disease).astype(bool)
    if not 0 < has.sum() < len(has):
        return {}
    r = rank_test(scores, has, method)
    return {
        "u_statistic": {"value": r["u_statistic"]},
        "p_value": {"value": r["p_value"]},
        "mean_rank_with": {"value": r["mean_rank"]},
        "mean_rank_without": {"value": r["mean_rank_without"]},
        "median_rank_with": {"value": r["median_rank"]},
        "q1_rank_with": {"value": r["q1_rank"]},
        "q3_rank_with": {"value": r["q3_rank"]},
        "n_with": {"value": int(r["n_scans"])},
        "n_without": {"value": int(r["n_total"] - r["n_scans"])},
    }


# --- inputs ------------------------------------------------------------------------------------------


def disease_matrix(table: pd.DataFrame, source: str = "the disease table") -> pd.DataFrame:
    """The scans x diseases table as 0/1 integers indexed by ``scan_id`` (as strings).

    ``table`` has a ``scan_id`` column and one column per disease (1 = the scan has it, 0 = not), e.g.
    read from CSV with every cell as text. Errors name ``source``, the row (data rows numbered from 1,
    the header is line 1 of a CSV) with its scan id, the column and the value.
    """
    if SCAN_ID not in table.columns:
        raise PrioritizationInputError(
            f"{source}: no '{SCAN_ID}' column (columns: {', '.join(map(repr, map(str, table.columns)))}). "
            f"Give one row per scan: '{SCAN_ID}' and one 0/1 column per disease."
        )
    diseases = [c for c in table.columns if c != SCAN_ID]
    if not diseases:
        raise PrioritizationInputError(
            f"{source}: only a '{SCAN_ID}' column; add one 0/1 column per disease (1 = the scan has it)."
        )
    reserved = [c for c in diseases if str(c).strip().lower() == ANY]
    if reserved:
        raise PrioritizationInputError(
            f"{source}: a disease column is named {reserved[0]!r}, the name of the union row the command "
            "adds itself; rename or drop that column."
        )
    ids = table[SCAN_ID].astype(str).str.strip()
    blank = [i + 1 for i in np.flatnonzero((ids == "") | table[SCAN_ID].isna().to_numpy())]
    if blank:
        raise PrioritizationInputError(f"{source}: empty '{SCAN_ID}' in row(s) {_listed(blank)}.")
    duplicated = sorted(ids[ids.duplicated()].unique())
    if duplicated:
        raise PrioritizationInputError(
            f"{source}: scan id(s) listed more than once: {_listed(duplicated)}. Give one row per scan."
        )
    values = {}
    for column in diseases:
        raw = table[column]
        if pd.api.types.is_bool_dtype(raw):  # a Parquet/JSONL boolean column
            raw = raw.astype(int)
        text = raw.astype(str).str.strip()
        number = pd.to_numeric(text.where(text != "", None), errors="coerce")
        bad = np.flatnonzero(~number.isin([0, 1]).to_numpy())
        if len(bad):
            i = int(bad[0])
            raise PrioritizationInputError(
                f"{source}: row {i + 1} (scan_id {ids.iloc[i]}), column {column!r}: {raw.iloc[i]!r} is not "
                f"0 or 1 ({len(bad)} such cell(s) in this column, rows {_listed([int(b) + 1 for b in bad])}). "
                "Write 1 when the scan has the disease and 0 when it has not; every cell needs a value."
            )
        values[str(column)] = number.astype(int).to_numpy()
    return pd.DataFrame(values, index=pd.Index(ids.to_numpy(), name=SCAN_ID))


def _score_columns(columns: Sequence[str]) -> dict[str, str]:
    """type -> column: ``scan__<type>_prob`` (the evaluator's predictions) or ``scan__<type>``
    (``reportsup-damil-predict``), the former when both are there."""
    found = {
        c.removeprefix("scan__").removesuffix("_prob"): c
        for c in columns
        if c.startswith("scan__") and c.endswith("_prob")
    }
    if not found:
        found = {
            c.removeprefix("scan__"): c for c in columns if c.startswith("scan__") and not c.endswith("_true")
        }
    return found


def scan_scores(predictions: pd.DataFrame, source: str = "the predictions") -> pd.DataFrame:
    """Per scan (index ``scan_id``) the abnormality score of each type and ``any`` (their maximum, Fig.
    5A), from a DaMIL predictions table (``scan_id`` + ``scan__<type>_prob``, or ``scan__<type>``)."""
    if SCAN_ID not in predictions.columns:
        raise PrioritizationInputError(
            f"{source}: no '{SCAN_ID}' column; is it a DaMIL run's predictions_<set>.csv or "
            "reportsup-damil-predict's predictions.csv?"
        )
    columns = _score_columns([str(c) for c in predictions.columns])
    if not columns:
        raise PrioritizationInputError(
            f"{source}: no scan-level score columns (scan__<type>_prob or scan__<type>); columns: "
            f"{_listed([str(c) for c in predictions.columns])}. Give a DaMIL analyzer's predictions."
        )
    ids = predictions[SCAN_ID].astype(str).str.strip()
    duplicated = sorted(ids[ids.duplicated()].unique())
    if duplicated:
        raise PrioritizationInputError(
            f"{source}: scan id(s) predicted more than once: {_listed(duplicated)}."
        )
    scores = pd.DataFrame(
        {t: pd.to_numeric(predictions[c], errors="coerce").to_numpy() for t, c in columns.items()},
        index=pd.Index(ids.to_numpy(), name=SCAN_ID),
    )
    missing = scores.index[scores.isna().any(axis=1)].tolist()
    if missing:
        raise PrioritizationInputError(f"{source}: scans without a numeric score: {_listed(missing)}.")
    scores[ANY] = scores.max(axis=1)
    return scores


def read_run_scores(source: str | Path, test_set: str | None = None) -> tuple[pd.DataFrame, Path]:
    """:func:`scan_scores` of a run folder's ``predictions_<test_set>.csv`` (``test_set`` may be omitted
    when the run has one), of a ``reportsup-damil-predict`` folder (its ``predictions.csv``), or of a
    predictions CSV given directly; also returns the file read."""
    source = Path(source)
    if source.is_file():
        path = source
    elif source.is_dir():
        sets = prediction_sets(source)
        if test_set is not None:
            path = source / predictions_csv(test_set)
            if not path.is_file():
                raise PrioritizationInputError(
                    f"{path}: not found; {source} has predictions for the test set(s) {sets or 'none'}."
                )
        elif len(sets) == 1:
            path = source / predictions_csv(sets[0])
        elif len(sets) > 1:
            raise PrioritizationInputError(
                f"{source}: predictions for several test sets ({', '.join(sets)}); choose one with "
                "--test-set (the paper ranked its preoperative set on its own)."
            )
        elif (source / DAMIL_PREDICT_CSV).is_file():
            path = source / DAMIL_PREDICT_CSV
        else:
            raise PrioritizationInputError(
                f"{source}: no {PREDICTIONS_PREFIX}<set>.csv (a DaMIL run tested on your scans) and no "
                f"{DAMIL_PREDICT_CSV} (reportsup-damil-predict --out-dir); run one of them first."
            )
    else:
        raise PrioritizationInputError(f"{source}: no such file or folder.")
    table = pd.read_csv(path, dtype={SCAN_ID: str}, keep_default_na=True)
    return scan_scores(table, str(path)), path


# --- the analysis --------------------------------------------------------------------------------------


def align(scores: pd.DataFrame, diseases: pd.DataFrame, source: str = "the disease table") -> pd.DataFrame:
    """``scores`` restricted to (and ordered as) the scans of ``diseases``: the ranked set is the
    labelled set (the paper's preoperative scans). A labelled scan without a prediction is an error
    naming it; predicted scans without labels are left out (the caller may count them)."""
    missing = [s for s in diseases.index if s not in scores.index]
    if missing:
        raise PrioritizationInputError(
            f"{source}: {len(missing)} scan id(s) have no prediction: {_listed(missing)}. Predict them "
            "(reportsup-damil-predict, or test the run on them) or remove them from the table; ids are "
            "compared as text, so '007' and '7' differ."
        )
    return scores.loc[diseases.index]


def disease_prioritization(
    scores: pd.Series | np.ndarray,
    diseases: pd.DataFrame,
    *,
    alpha: float = PAPER_ALPHA,
    method: str = "auto",
    score_name: str = ANY,
) -> pd.DataFrame:
    """One row per disease and one for ``any`` (the union), in Fig. 5A's order (by median rank, ``any``
    last), with the columns of :data:`RESULT_COLUMNS`: :func:`rank_test` of the disease's scans against
    the rest of the set, ``significant`` = p < ``alpha``, and a ``note`` where no test is possible.

    ``scores`` (one per row of ``diseases``, aligned by position or by ``scan_id``) ranks the set;
    ``diseases`` is :func:`disease_matrix`'s 0/1 table.
    """
    if isinstance(scores, pd.Series):
        scores = align(scores.to_frame(score_name), diseases)[score_name].to_numpy()
    scores = np.asarray(scores, dtype=float)
    if len(scores) != len(diseases):
        raise ValueError(f"{len(scores)} scores for {len(diseases)} scans of the disease table.")
    columns = {**{str(c): diseases[c].to_numpy().astype(bool) for c in diseases.columns}}
    columns[ANY] = diseases.to_numpy().astype(bool).any(axis=1)
    rows = []
    for name, has in columns.items():
        r = rank_test(scores, has, method)
        note = ""
        if r["n_scans"] == 0:
            note = "no scan has it: no ranks, no test"
        elif r["n_scans"] == r["n_total"]:
            note = "every scan has it: nothing to compare with, no test"
        rows.append(
            {
                "score": score_name,
                "disease": name,
                **r,
                "significant": bool(r["p_value"] < alpha) if not np.isnan(r["p_value"]) else False,
                "note": note,
            }
        )
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    diseases_only = table[table["disease"] != ANY].sort_values(
        "median_rank", kind="stable", na_position="last"
    )
    return pd.concat([diseases_only, table[table["disease"] == ANY]], ignore_index=True)


def prioritize_all(
    scores: pd.DataFrame,
    diseases: pd.DataFrame,
    score_names: Sequence[str] | None = None,
    *,
    alpha: float = PAPER_ALPHA,
    method: str = "auto",
) -> pd.DataFrame:
    """:func:`disease_prioritization` for each score (default: ``any`` first, then every type: Fig. 5A
    and 5B / S5), stacked; ``scores`` is :func:`scan_scores`' table."""
    names = list(score_names) if score_names else [ANY, *[c for c in scores.columns if c != ANY]]
    unknown = [n for n in names if n not in scores.columns]
    if unknown:
        raise PrioritizationInputError(
            f"unknown score(s) {', '.join(unknown)}; the predictions have {', '.join(scores.columns)}."
        )
    aligned = align(scores, diseases)
    return pd.concat(
        [
            disease_prioritization(aligned[n].to_numpy(), diseases, alpha=alpha, method=method, score_name=n)
            for n in names
        ],
        ignore_index=True,
    )


# --- figures -------------------------------------------------------------------------------------------


def _p_text(p: float) -> str:
    if np.isnan(p):
        return "no test"
    return f"p = {p:.2g}" if p >= 1e-4 else f"p = {p:.1e}"


def plot_prioritization(
    scores: np.ndarray, diseases: pd.DataFrame, result: pd.DataFrame, path: str | Path, title: str = ""
) -> Path:
    """Figure 5A / S5 layout: one row per disease of ``result`` (its order), the set's scans along x
    sorted by ``scores`` in descending order (rank 1 on the left), a coloured strip for each scan with the
    disease, the rank quartiles as a box (Q1-Q3) with the median, the positive ratio beside the name and
    the one-sided rank-sum p-value on the right."""
    scores = np.asarray(scores, dtype=float)
    ranks = abnormality_ranks(scores)
    has_any = diseases.to_numpy().astype(bool).any(axis=1)
    names = result["disease"].tolist()
    n_rows, n_total = len(names), len(scores)
    fig, ax = plt.subplots(figsize=(9, 0.45 * n_rows + 1.2))
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(n_rows, 2)))
    for i, name in enumerate(names):
        y = n_rows - 1 - i
        has = has_any if name == ANY else diseases[name].to_numpy().astype(bool)
        if has.any():
            ax.vlines(ranks[has], y - 0.35, y + 0.35, colors=[colours[i]], linewidth=0.8)
        row = result.iloc[i]
        if not np.isnan(row["median_rank"]):
            ax.add_patch(
                plt.Rectangle(
                    (row["q1_rank"], y - 0.42), row["q3_rank"] - row["q1_rank"], 0.84, fill=False, lw=1.2
                )
            )
            ax.vlines(row["median_rank"], y - 0.42, y + 0.42, colors="black", linewidth=2)
        ax.text(n_total * 1.01 + 0.5, y, _p_text(row["p_value"]), va="center", fontsize=8)
    labels = [f"{n} ({r:.1%})" for n, r in zip(names, result["positive_ratio"], strict=True)]
    ax.set_yticks(range(n_rows)[::-1], labels, fontsize=8)
    ax.set_xlim(0.5, n_total + 0.5)
    ax.set_ylim(-0.6, n_rows - 0.4)
    ax.set_xlabel(f"rank by abnormality score (1 = most abnormal of {n_total} scans)")
    ax.set_title(title or "Prioritization: ranks of the scans with each disease (box: quartiles)", fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_median_ranks(result: pd.DataFrame, path: str | Path) -> Path:
    """Figure 5B layout: median rank percentile (0 = most abnormal) of each disease (rows, in the order of
    the ``any`` score's rows) under each score (columns), annotated; * marks p < the row's alpha."""
    order = result.loc[result["score"] == result["score"].iloc[0], "disease"].tolist()
    scores = list(dict.fromkeys(result["score"]))
    grid = result.pivot(index="disease", columns="score", values="median_percentile").loc[order, scores]
    stars = result.pivot(index="disease", columns="score", values="significant").loc[order, scores]
    fig, ax = plt.subplots(figsize=(1.3 * len(scores) + 3, 0.4 * len(order) + 1.5))
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis_r", vmin=0, vmax=100, aspect="auto")
    for i in range(len(order)):
        for j in range(len(scores)):
            v = grid.iat[i, j]
            if not np.isnan(v):
                ax.text(
                    j,
                    i,
                    f"{v:.0f}{'*' if stars.iat[i, j] else ''}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v < 50 else "black",
                )
    ax.set_xticks(
        range(len(scores)), [s.replace("_", " ") for s in scores], rotation=30, ha="right", fontsize=8
    )
    ax.set_yticks(range(len(order)), order, fontsize=8)
    fig.colorbar(image, ax=ax, label="median rank percentile (0 = most abnormal)")
    ax.set_title("Median rank of each disease's scans per abnormality score (* significant)", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
