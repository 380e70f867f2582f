"""Audit report labels: score a labeller against a private gold set, find conflicting duplicate reports.

    reportsup-label-audit score --predictions RUN/predictions_report_label.csv --gold gold.csv \\
        --labels abnormal [--threshold 0.5] [--out audit.csv]
    reportsup-label-audit duplicates reports.csv --labels abnormal mass [--text-column text] \\
        [--id-column report_id] [--similarity 0.95] [--out conflicts.csv]

``score`` accepts any labeller's per-report output: a run's predictions (``<label>_prob``, thresholded),
or hard 0/1 labels in ``<label>_pred`` or ``<label>`` (looked up in that order); the gold set holds
``<label>`` columns with 0/1 and empty = not annotated. ``duplicates`` lists reports of a training table
whose normalised text is identical, or near-identical by character n-gram TF-IDF cosine, and whose
labels differ. Tables are CSV, Parquet or JSONL, read by extension (reportsup/analysis/label_audit.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from datamodules.common.tables import ReportTableError, read_table_file
from reportsup.analysis.label_audit import (
    PREDICTION_SUFFIXES,
    LabelAuditError,
    audit_labeller,
    audit_markdown,
    conflicting_duplicates,
    prediction_column,
)

PROG = "reportsup-label-audit"
# Columns of a reports table or predictions file that are never labels.
NOT_LABELS = {
    "id",
    "report_id",
    "patient_id",
    "scan_id",
    "text",
    "split",
    "site",
    "image_path",
    "image",
    "report",
}
OUTPUT_TYPES = (".csv", ".parquet", ".jsonl")


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A CSV (every cell as text), Parquet or JSONL table; a missing or unreadable file is a clear error."""
    if not path.is_file():
        raise LabelAuditError(f"{path}: {what} file not found. Pass an existing CSV, Parquet or JSONL file.")
    try:
        return read_table_file(path)
    except ReportTableError as err:
        raise LabelAuditError(str(err)) from None


def write_table(table: pd.DataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_TYPES:
        raise LabelAuditError(
            f"{path}: unsupported output type '{path.suffix}'. Use .csv, .parquet or .jsonl."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            table.to_csv(path, index=False)
        elif suffix == ".parquet":
            table.to_parquet(path, index=False)
        else:
            table.to_json(path, orient="records", lines=True, force_ascii=False)
    except OSError as err:
        raise LabelAuditError(f"{path}: cannot write: {err.strerror or err}.") from None


def shared_labels(predictions: pd.DataFrame, gold: pd.DataFrame, ignore: set[str]) -> list[str]:
    """Gold columns (in gold order) for which the predictions carry a prediction column."""
    candidates = [c for c in gold.columns if c not in NOT_LABELS | ignore]
    return [c for c in candidates if prediction_column(predictions, c) is not None]


def score(args: argparse.Namespace) -> None:
    predictions = read_table(args.predictions, "predictions")
    gold = read_table(args.gold, "gold")
    gold_id = args.gold_id_column or next(
        (c for c in (args.id_column, "report_id", "id") if c in gold.columns), args.id_column
    )
    labels = args.labels or shared_labels(predictions, gold, {args.id_column, gold_id})
    if not labels:
        raise LabelAuditError(
            f"no label is in both files: {args.gold} has {list(gold.columns)}, {args.predictions} has "
            f"{list(predictions.columns)} (a gold column <label> needs one of "
            f"{', '.join('<label>' + s for s in PREDICTION_SUFFIXES)} in the predictions). "
            "Name the labels with --labels."
        )
    audit = audit_labeller(
        predictions,
        gold,
        labels,
        id_column=args.id_column,
        threshold=args.threshold,
        gold_id_column=gold_id,
        allow_missing=args.allow_missing,
        predictions_name=str(args.predictions),
        gold_name=str(args.gold),
    )
    print(audit_markdown(audit, title=f"Label audit: {args.predictions} against {args.gold}"))
    used = dict(zip(audit["label"], audit["prediction_column"], strict=True))
    print("\nprediction columns: " + ", ".join(f"{lb} <- {col}" for lb, col in used.items()))
    if any(col.endswith("_prob") for col in used.values()):
        print(f"<label>_prob counts as positive when > {args.threshold} (--threshold)")
    if args.out:
        write_table(audit, args.out)
        print(f"wrote {args.out}")


def duplicates(args: argparse.Namespace) -> None:
    table = read_table(args.table, "reports table")
    conflicts = conflicting_duplicates(
        table,
        labels=args.labels,
        text_column=args.text_column,
        id_column=args.id_column,
        similarity=args.similarity,
        source=str(args.table),
    )
    groups = conflicts.drop_duplicates("group")
    kinds = groups["match"].value_counts()
    print(
        f"{len(groups)} conflicting group(s) of identical or near-identical reports (similarity >= "
        f"{args.similarity}) in {args.table}: {kinds.get('identical', 0)} identical, "
        f"{kinds.get('near-identical', 0)} near-identical; {len(conflicts)} of {len(table)} reports."
    )
    for label in args.labels:
        n = int(groups["conflicting_labels"].str.split(";").map(lambda ls, lb=label: lb in ls).sum())
        if n:
            print(f"  {label}: {n} group(s) disagree")
    if args.out:
        write_table(conflicts, args.out)
        print(f"wrote {args.out}")
    elif len(conflicts):
        preview = conflicts[conflicts["group"] <= 3].copy()
        preview[args.text_column] = preview[args.text_column].str.slice(0, 80)
        print(preview.to_string(index=False))
        print("pass --out conflicts.csv to write every group")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="a labeller's output against a gold set: per-label agreement")
    s.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="the labeller's output, e.g. RUN/predictions_<set>.csv",
    )
    s.add_argument(
        "--gold", type=Path, required=True, help="gold labels: an id column and 0/1 <label> columns"
    )
    s.add_argument("--labels", nargs="+", help="labels to audit (default: every label present in both files)")
    s.add_argument(
        "--threshold", type=float, default=0.5, help="positive when <label>_prob > threshold (0.5)"
    )
    s.add_argument("--id-column", default="id", help="report id column of the predictions (default: id)")
    s.add_argument(
        "--gold-id-column",
        help="report id column of the gold set (default: the predictions' one, else report_id)",
    )
    s.add_argument(
        "--allow-missing",
        action="store_true",
        help="audit the scored part of an incompletely scored gold set",
    )
    s.add_argument("--out", type=Path, help="write the audit table (.csv, .parquet or .jsonl)")
    s.set_defaults(run=score)

    d = sub.add_parser("duplicates", help="identical or near-identical reports whose labels differ")
    d.add_argument("table", type=Path, help="a training table: id, text and 0/1 label columns")
    d.add_argument("--labels", nargs="+", required=True, help="label columns to compare")
    d.add_argument("--text-column", default="text", help="report text column (default: text)")
    d.add_argument("--id-column", default="report_id", help="report id column (default: report_id)")
    d.add_argument(
        "--similarity",
        type=float,
        default=0.95,
        help="near-identical from this TF-IDF cosine on (default 0.95)",
    )
    d.add_argument("--out", type=Path, help="write every conflicting report (.csv, .parquet or .jsonl)")
    d.set_defaults(run=duplicates)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except LabelAuditError as err:
        raise SystemExit(f"{PROG}: {err}") from None


if __name__ == "__main__":
    main()
