"""Inter-rater agreement of report annotations: Fleiss' kappa per label (the ALARM paper's Table 2).

    reportsup-agreement annotations.csv --item-column report_id --rater-column rater \\
        --labels mass acute_stroke atrophy --out kappa.json

The table (CSV, Parquet or JSONL) is in long format: one row per report and rater, one column per
label (e.g. 0/1). Without ``--labels`` every column other than the item and rater columns is a label.
Prints one kappa per label as a Markdown table; ``--out`` also writes them as JSON
(``{label: {kappa, observed_agreement, expected_agreement, n_items, ...}}``). Definitions and checks
(equal ratings per item, at least 2 raters, one rating per rater and item): ``reportsup/analysis/agreement.py``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from reportsup.analysis.agreement import fleiss_kappa_per_label, kappa_markdown
from reportsup.cli.common import read_table, require_columns

PROG = "reportsup-agreement"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path, help="long-format annotations: .csv, .parquet or .jsonl")
    parser.add_argument(
        "--item-column", default="report_id", help="item (report) id column (default: report_id)"
    )
    parser.add_argument("--rater-column", default="rater", help="rater id column (default: rater)")
    parser.add_argument(
        "--labels", nargs="+", default=None, help="label columns (default: every other column)"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write the kappas to")
    args = parser.parse_args(argv)

    table = read_table(args.annotations, prog=PROG)
    options = {args.item_column: "--item-column", args.rater_column: "--rater-column"}
    options |= {label: "--labels" for label in args.labels or []}
    require_columns(table, options, args.annotations, PROG)
    labels = args.labels or [str(c) for c in table.columns if c not in (args.item_column, args.rater_column)]
    if not labels:
        raise SystemExit(
            f"{PROG}: {args.annotations}: no label column besides '{args.item_column}' and "
            f"'{args.rater_column}'. Add label columns or name them with --labels."
        )
    if table.empty:
        raise SystemExit(f"{PROG}: {args.annotations}: the table has no rows.")
    try:
        results = fleiss_kappa_per_label(table, args.item_column, args.rater_column, labels)
    except ValueError as err:
        raise SystemExit(f"{PROG}: {args.annotations}: {err}") from None

    print(kappa_markdown(results))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # NaN (one category only) is written as null: strict JSON has no NaN.
        clean = {
            label: {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for label, r in results.items()
        }
        args.out.write_text(json.dumps(clean, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
