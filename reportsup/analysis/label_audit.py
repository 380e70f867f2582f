"""Label audit: a labeller measured against a private gold set, and conflicting duplicate reports.

Report-supervised models inherit the errors of whatever labelled their reports. Two checks:

* :func:`audit_labeller` scores any labeller's per-report output (a run's ``predictions_<set>.csv``,
  a bulk-labelling table, another team's labels) against a hand-annotated gold set: per label the
  confusion counts, sensitivity, specificity, precision, F1, accuracy and Cohen's kappa.
* :func:`conflicting_duplicates` finds reports in a training table whose text is identical or
  near-identical but whose labels differ: contradictory supervision, usually a labelling error.

Label values are 0/1; empty (NaN, None, "") means "not annotated" and is left out of that label,
never read as 0. Anything else is an error naming the source, the row (1-based data row, as a
spreadsheet shows it below the header), the id and the column. Pure functions of tables, no
Lightning and no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import cohen_kappa_score
from sklearn.utils.extmath import randomized_svd

AUDIT_COLUMNS: tuple[str, ...] = (
    "label",
    "prediction_column",
    "n",
    "n_positive",
    "tp",
    "fp",
    "fn",
    "tn",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "accuracy",
    "kappa",
    "n_not_annotated",
    "n_missing",
)
# Where a label's prediction is looked up, first match wins: a probability (thresholded here, so the
# threshold is explicit), then an explicit hard prediction, then a bare 0/1 column named after the label.
PREDICTION_SUFFIXES: tuple[str, ...] = ("_prob", "_pred", "")
_TRUE = {"1", "1.0", "true"}
_FALSE = {"0", "0.0", "false"}
_SHOWN = 5  # ids or rows quoted in an error message


class LabelAuditError(ValueError):
    """Inputs the audit cannot use as they are; the message names source, row, id and column and the fix."""


def _is_blank(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == ""


def _first(items: Sequence[object]) -> str:
    shown = ", ".join(repr(x) for x in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _require_columns(df: pd.DataFrame, columns: Sequence[str], source: str, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LabelAuditError(
            f"{source}: {what} column(s) {missing} not found; the file has {list(df.columns)}. "
            "Fix the column name(s) passed or the file's header."
        )


def _ids(df: pd.DataFrame, id_column: str, source: str) -> pd.Series:
    """The id column as stripped strings (so 7 in Parquet matches "7" in CSV); blank or repeated ids are errors."""
    _require_columns(df, [id_column], source, "id")
    ids = df[id_column].map(lambda v: "" if _is_blank(v) else str(v).strip())
    blank = np.flatnonzero((ids == "").to_numpy())
    if len(blank):
        raise LabelAuditError(
            f"{source}, row(s) {_first([int(i) + 1 for i in blank])}, column '{id_column}': empty id. "
            "Every row needs one."
        )
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        first = ids[dup].iloc[0]
        rows = [int(i) + 1 for i in np.flatnonzero((ids == first).to_numpy())]
        raise LabelAuditError(
            f"{source}, rows {rows}, column '{id_column}': id {first!r} appears {len(rows)} times. "
            "Ids must be unique: remove the repeated rows."
        )
    return ids.reset_index(drop=True)


def parse_binary(values: pd.Series, source: str, column: str, ids: pd.Series) -> np.ndarray:
    """0/1 labels as float with NaN for not annotated; any other value is an error naming its row and id."""
    out = np.full(len(values), np.nan, dtype=np.float64)
    for i, v in enumerate(values.tolist()):
        if _is_blank(v):
            continue
        s = str(v).strip().lower()
        if s in _TRUE or s in _FALSE:
            out[i] = 1.0 if s in _TRUE else 0.0
            continue
        raise LabelAuditError(
            f"{source}, row {i + 1} ({ids.name}={ids.iloc[i]!r}), column '{column}': value {v!r} is not 0, 1 "
            "or empty. Use 1 for present, 0 for absent, and leave the cell empty when not annotated."
        )
    return out


def _parse_probability(values: pd.Series, source: str, column: str, ids: pd.Series) -> np.ndarray:
    p = pd.to_numeric(values.map(lambda v: np.nan if _is_blank(v) else v), errors="coerce").to_numpy(float)
    bad = np.flatnonzero((np.isnan(p) & ~values.map(_is_blank).to_numpy()) | (p < 0) | (p > 1))
    if len(bad):
        i = int(bad[0])
        raise LabelAuditError(
            f"{source}, row {i + 1} ({ids.name}={ids.iloc[i]!r}), column '{column}': {values.iloc[i]!r} is not "
            "a probability in [0, 1]."
        )
    return p


def prediction_column(predictions: pd.DataFrame, label: str) -> str | None:
    """The column holding ``label``'s prediction (see :data:`PREDICTION_SUFFIXES`), or None."""
    return next((label + s for s in PREDICTION_SUFFIXES if label + s in predictions.columns), None)


def _kappa(y: np.ndarray, pred: np.ndarray) -> float:
    """Cohen's kappa; NaN when chance agreement is 1 (both raters give one and the same class)."""
    n = len(y)
    if n == 0:
        return float("nan")
    pe = (np.sum(y == 1) * np.sum(pred == 1) + np.sum(y == 0) * np.sum(pred == 0)) / n**2
    return float(cohen_kappa_score(y, pred, labels=[0, 1])) if pe < 1 else float("nan")


def _nan_div(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def confusion_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Counts and agreement metrics of hard 0/1 predictions against 0/1 truth; NaN where undefined."""
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    tp, fp = int(np.sum((y == 1) & (p == 1))), int(np.sum((y == 0) & (p == 1)))
    fn, tn = int(np.sum((y == 1) & (p == 0))), int(np.sum((y == 0) & (p == 0)))
    return {
        "n": len(y),
        "n_positive": tp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "sensitivity": _nan_div(tp, tp + fn),
        "specificity": _nan_div(tn, tn + fp),
        "precision": _nan_div(tp, tp + fp),
        "f1": _nan_div(2 * tp, 2 * tp + fp + fn),
        "accuracy": _nan_div(tp + tn, len(y)),
        "kappa": _kappa(y, p),
    }


def audit_labeller(
    predictions: pd.DataFrame,
    gold: pd.DataFrame,
    labels: Sequence[str],
    id_column: str = "id",
    threshold: float = 0.5,
    *,
    gold_id_column: str | None = None,
    allow_missing: bool = False,
    predictions_name: str = "predictions",
    gold_name: str = "gold",
) -> pd.DataFrame:
    """One row per label: the labeller in ``predictions`` scored against ``gold`` (columns :data:`AUDIT_COLUMNS`).

    Rows are joined on the report id (``id_column`` in predictions, ``gold_id_column`` in gold, by
    default the same name). A label's prediction is ``<label>_prob`` > ``threshold`` (strictly
    greater, as torchmetrics thresholds a run's ``metrics.json``, so the numbers agree), else
    ``<label>_pred``, else ``<label>`` (0/1); ``<label>_true`` is the training label, never used.
    Gold ``<label>`` is 0/1 with empty = not annotated: such reports are left out of that label and
    counted in ``n_not_annotated``. A gold report that the labeller did not score (id absent from
    predictions, or an empty prediction) is an error, since a private gold set is meant to be scored
    whole; with ``allow_missing`` it is left out and counted in ``n_missing``. Prediction rows
    without a gold row are ignored.
    """
    if not 0.0 <= threshold <= 1.0:
        raise LabelAuditError(f"threshold {threshold} is not in [0, 1].")
    if not labels:
        raise LabelAuditError("no labels to audit: name at least one label.")
    labels = list(dict.fromkeys(labels))
    gold_id_column = gold_id_column or id_column
    pred_ids = _ids(predictions, id_column, predictions_name)
    gold_ids = _ids(gold, gold_id_column, gold_name)
    _require_columns(gold, list(labels), gold_name, "gold label")
    columns = {label: prediction_column(predictions, label) for label in labels}
    absent = [label for label, col in columns.items() if col is None]
    if absent:
        wanted = [label + s for label in absent for s in PREDICTION_SUFFIXES]
        raise LabelAuditError(
            f"{predictions_name}: no prediction column for label(s) {absent} (looked for {wanted}); the file "
            f"has {list(predictions.columns)}. Pass the labels this labeller predicts."
        )
    position = pd.Series(np.arange(len(pred_ids)), index=pred_ids.to_numpy())
    row_of = position.reindex(gold_ids.to_numpy()).to_numpy()  # NaN: gold id never scored
    unscored = gold_ids[np.isnan(row_of)].tolist()
    if unscored and not allow_missing:
        raise LabelAuditError(
            f"{len(unscored)} of {len(gold_ids)} {gold_name} report(s) are not in {predictions_name} "
            f"(column '{id_column}'): {_first(unscored)}. Score the whole gold set with the labeller, check "
            "that both files use the same ids, or pass allow_missing (--allow-missing) to audit the rest."
        )
    found = ~np.isnan(row_of)
    rows = []
    for label in labels:
        col = columns[label]
        y = parse_binary(gold[label].reset_index(drop=True), gold_name, label, gold_ids)
        values = predictions[col].reset_index(drop=True)
        if col.endswith("_prob"):
            prob = _parse_probability(values, predictions_name, col, pred_ids)
            scored = np.where(np.isnan(prob), np.nan, (prob > threshold).astype(float))
        else:
            scored = parse_binary(values, predictions_name, col, pred_ids)
        pred = np.full(len(gold_ids), np.nan)
        pred[found] = scored[row_of[found].astype(int)]
        annotated = ~np.isnan(y)
        missing = annotated & np.isnan(pred)
        if missing.any() and not allow_missing:
            ids = gold_ids[missing & found].tolist()
            raise LabelAuditError(
                f"{predictions_name}, column '{col}': empty prediction for {len(ids)} annotated {gold_name} "
                f"report(s): {_first(ids)}. Score them, or pass allow_missing (--allow-missing) to leave them out."
            )
        use = annotated & ~missing
        rows.append(
            {
                "label": label,
                "prediction_column": col,
                **confusion_metrics(y[use], pred[use]),
                "n_not_annotated": int((~annotated).sum()),
                "n_missing": int(missing.sum()),
            }
        )
    return pd.DataFrame(rows, columns=list(AUDIT_COLUMNS))


def audit_markdown(audit: pd.DataFrame, title: str | None = None) -> str:
    """The audit as a Markdown table, one row per label."""
    metrics = ["sensitivity", "specificity", "precision", "f1", "accuracy", "kappa"]
    counts = ["n", "n_positive", "tp", "fp", "fn", "tn", "n_not_annotated", "n_missing"]
    lines = [f"# {title}", ""] if title else []
    lines += [
        "| label | " + " | ".join(counts + metrics) + " |",
        "|---|" + "---:|" * (len(counts) + len(metrics)),
    ]
    for _, r in audit.iterrows():
        cells = [f"{int(r[c])}" for c in counts] + [
            "n/a" if pd.isna(r[m]) else f"{r[m]:.3f}" for m in metrics
        ]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- duplicates


def normalise_text(texts: pd.Series) -> pd.Series:
    """Lower case, punctuation replaced by spaces, whitespace collapsed: "Left-sided  INFARCT." -> "left sided infarct"."""
    return (
        texts.astype(str)
        .str.lower()
        .str.replace(r"[^\w\s]|_", " ", regex=True)
        .str.replace(r"\s+", " ", regex=True)
        .str.strip()
    )


def tfidf_vectors(texts: Sequence[str]) -> sp.csr_matrix:
    """Unit-length TF-IDF vectors of character 3-5 grams (float32); a text without any 3-gram is a zero row."""
    try:
        return (
            TfidfVectorizer(analyzer="char", ngram_range=(3, 5), dtype=np.float32)
            .fit_transform(texts)
            .tocsr()
        )
    except ValueError:  # empty vocabulary: every text shorter than 3 characters
        return sp.csr_matrix((len(texts), 1), dtype=np.float32)


def similar_pairs(
    X: sp.csr_matrix,
    similarity: float,
    *,
    rank: int = 128,
    n_common: int = 16384,
    max_cells: int = 25_000_000,
    svd_sample: int = 10_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` of rows of ``X`` (unit length) with cosine similarity >= ``similarity``, exactly.

    Comparing every pair of sparse rows costs hours at 100k reports (frequent n-grams make the product
    dense), so pairs are first bounded cheaply and only candidates are scored. Split the features into
    the ``n_common`` most frequent (C) and the rest (R); then ``x.y = x_C.y_C + x_R.y_R``. The common
    block is projected on its top ``rank`` singular vectors, ``x_C = e + r`` with ``r`` orthogonal to
    the subspace, so ``x_C.y_C = e_x.e_y + r_x.r_y <= e_x.e_y + |r_x||r_y|`` (Cauchy-Schwarz): a small
    dense product. The rare block is multiplied exactly as sparse matrices: rare features occur in few
    reports, so that product stays sparse. Pairs whose bound reaches the threshold are scored exactly;
    no pair is missed. Memory: ``X`` twice (its two column blocks), ``(rank + 1)`` floats per report and
    ``max_cells`` float32 bounds per block of rows. ``svd_sample`` reports fit the subspace.
    """
    n, d = X.shape
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
    if n < 2:
        return empty
    X = X.tocsr().astype(np.float32, copy=False)
    df = np.bincount(X.indices, minlength=d)  # reports per feature
    common = np.zeros(d, dtype=bool)
    common[np.argsort(-df, kind="stable")[: min(n_common, d)]] = True
    XC, XR = X[:, common], X[:, ~common].tocsr()
    k = min(rank, XC.shape[1] - 1, n - 1)
    if k >= 1:
        # Any orthonormal basis keeps the bound exact; one fitted on a sample of reports is nearly as tight.
        fit = (
            XC
            if n <= svd_sample
            else XC[np.sort(np.random.default_rng(0).choice(n, svd_sample, replace=False))]
        )
        _, _, vt = randomized_svd(fit, k, n_iter=3, random_state=0)
        E = np.asarray(XC @ vt.T, dtype=np.float32)
    else:
        E = np.zeros((n, 0), dtype=np.float32)
    norm2 = np.asarray(XC.multiply(XC).sum(axis=1)).ravel()
    resid = np.sqrt(np.clip(norm2 - (E.astype(np.float64) ** 2).sum(axis=1), 0, None))
    # One extra coordinate carries the residual norm: [e, |r|].[e', |r'|] is the bound on the common part.
    E = np.hstack([E, resid[:, None].astype(np.float32)])
    slack = 1e-4  # float32 rounding of the bound must not drop a pair that reaches the threshold exactly
    block = max(1, int(max_cells // n))
    out_i, out_j, out_s = [], [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        bound = E[start:stop] @ E[start:].T
        # Transposed, so that only the small block is converted to another sparse format, not the rest.
        rare = (XR[start:] @ XR[start:stop].T).tocoo()
        bound[rare.col, rare.row] += rare.data
        i, j = np.nonzero(bound >= similarity - slack)
        keep = j > i  # both offsets are relative to `start`: keep each pair once, above the diagonal
        i, j = i[keep] + start, j[keep] + start
        for b in range(0, len(i), 50_000):
            ii, jj = i[b : b + 50_000], j[b : b + 50_000]
            s = np.asarray(X[ii].multiply(X[jj]).sum(axis=1)).ravel()
            hit = s >= similarity
            out_i.append(ii[hit])
            out_j.append(jj[hit])
            out_s.append(s[hit])
    if not out_i:
        return empty
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)


def _check_text(table: pd.DataFrame, text_column: str, ids: pd.Series, source: str) -> pd.Series:
    texts = table[text_column].reset_index(drop=True)
    texts = texts.map(lambda t: t.decode("utf-8", errors="replace") if isinstance(t, bytes) else t)
    empty = np.flatnonzero(texts.map(_is_blank).to_numpy())
    if len(empty):
        where = [f"row {int(i) + 1} ({ids.name}={ids.iloc[int(i)]!r})" for i in empty[:_SHOWN]]
        more = f" and {len(empty) - _SHOWN} more" if len(empty) > _SHOWN else ""
        raise LabelAuditError(
            f"{source}, column '{text_column}': {len(empty)} empty report text(s): {', '.join(where)}{more}. "
            "Fill in the reports or remove those rows; they are not dropped silently."
        )
    return texts.astype(str)


def conflicting_duplicates(
    table: pd.DataFrame,
    *,
    labels: Sequence[str],
    text_column: str = "text",
    id_column: str = "report_id",
    similarity: float = 0.95,
    source: str = "table",
) -> pd.DataFrame:
    """Groups of identical or near-identical reports in which some label differs; one row per report.

    Texts are compared after :func:`normalise_text`. Identical normalised texts are one node;
    near-identical ones are joined by an edge when the cosine similarity of their character 3-5 gram
    TF-IDF vectors is >= ``similarity`` (:func:`similar_pairs`). Groups are the connected components,
    so a chain a~b~c is one group even if a and c are less similar. A label conflicts when the
    group's annotated values include both 0 and 1 (not annotated = empty is not a conflict).

    Columns: ``group`` (1, 2, ... in table order), ``match`` ("identical" when every text in the group
    is the same after normalisation, else "near-identical"), ``n_reports``, ``row`` (1-based data row
    in ``table``), the id, ``similarity`` (cosine to the group's first report; 1 for the same text),
    ``conflicting_labels`` (";"-joined), the label columns and the text. Sorted by group, then row.
    """
    if not 0.0 < similarity <= 1.0:
        raise LabelAuditError(f"similarity {similarity} is not in (0, 1].")
    if not labels:
        raise LabelAuditError("no labels to compare: name at least one label column.")
    labels = list(dict.fromkeys(labels))
    ids = _ids(table, id_column, source)
    _require_columns(table, [text_column], source, "text")
    _require_columns(table, list(labels), source, "label")
    texts = _check_text(table, text_column, ids, source)
    y = np.column_stack([parse_binary(table[lb].reset_index(drop=True), source, lb, ids) for lb in labels])

    node, unique = pd.factorize(normalise_text(texts))  # node[row]: index of the row's normalised text
    X = tfidf_vectors(list(unique))
    i, j, _ = similar_pairs(X, similarity)
    graph = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(len(unique), len(unique)))
    _, component = connected_components(graph, directed=False)

    columns = ["group", "match", "n_reports", "row", id_column, "similarity", "conflicting_labels"]
    columns += [*labels, text_column]
    frame = pd.DataFrame({"row": np.arange(len(table)) + 1, "component": component[node], "node": node})
    frame = frame[frame.groupby("component")["row"].transform("size") >= 2]
    # A label conflicts when its annotated values in the group span 0 and 1 (min/max skip NaN).
    values = pd.DataFrame(y[frame["row"].to_numpy() - 1], columns=list(labels), index=frame.index)
    by_group = values.groupby(frame["component"].to_numpy())
    low, high = by_group.min(), by_group.max()
    differs = (low == 0) & (high == 1)
    differs = differs[differs.any(axis=1)]
    conflict_of = {comp: ";".join(lb for lb in labels if flags[lb]) for comp, flags in differs.iterrows()}
    frame = frame[frame["component"].isin(list(conflict_of))].copy()
    if frame.empty:
        return pd.DataFrame(columns=columns)

    nodes = frame["node"].to_numpy()
    first_node = frame.groupby("component")["node"].transform("first").to_numpy()  # frame is in row order
    sim = np.asarray(X[nodes].multiply(X[first_node]).sum(axis=1)).ravel()
    frame["similarity"] = np.where(nodes == first_node, 1.0, np.clip(sim, 0.0, 1.0))
    frame["n_reports"] = frame.groupby("component")["row"].transform("size")
    n_texts = frame.groupby("component")["node"].transform("nunique")
    frame["match"] = np.where(n_texts == 1, "identical", "near-identical")
    frame["conflicting_labels"] = frame["component"].map(conflict_of)
    frame["group"] = frame["component"].map({c: k + 1 for k, c in enumerate(pd.unique(frame["component"]))})
    rows = frame["row"].to_numpy() - 1
    frame[id_column] = ids.to_numpy()[rows]
    for k, lb in enumerate(labels):
        frame[lb] = pd.array(np.where(np.isnan(y[rows, k]), pd.NA, y[rows, k]), dtype="Int64")
    frame[text_column] = texts.to_numpy()[rows]
    return frame.sort_values(["group", "row"])[columns].reset_index(drop=True)
