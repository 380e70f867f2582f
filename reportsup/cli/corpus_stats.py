"""Lexical complexity of a reports table per site: the ALARM paper's Table 1 (type-token ratio, Yule's I).

    reportsup-corpus-stats reports.csv --text-column text --site-column site --out stats.csv

Prints a Markdown table (one row per site, then "all") and writes every statistic, Yule's K included,
as CSV. Definitions and tokenization: ``reportsup/analysis/corpus_stats.py``. A row whose text is empty, missing
or holds no word is an error, listed by data row (1 = first row below the header); ``--skip-empty``
leaves those rows out instead and lists them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from reportsup.analysis.corpus_stats import corpus_statistics_by_group, statistics_markdown, tokenize
from reportsup.cli.common import read_table, require_columns, row_list

PROG = "reportsup-corpus-stats"


def empty_text_rows(texts: pd.Series) -> list[int]:
    """Positions (0-based) of texts that are missing, not strings, or hold no word token."""
    return [i for i, t in enumerate(texts) if not isinstance(t, str) or not tokenize(t)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path, help="reports table: .csv, .parquet or .jsonl")
    parser.add_argument("--text-column", default="text", help="report text column (default: text)")
    parser.add_argument(
        "--site-column",
        default=None,
        help="column to group by (default: 'site' when the table has it, else no grouping)",
    )
    parser.add_argument("--out", type=Path, default=None, help="CSV to write the statistics to")
    parser.add_argument(
        "--skip-empty",
        action="store_true",
        help="leave out (and list) rows whose text is empty or holds no word, instead of stopping",
    )
    args = parser.parse_args(argv)

    table = read_table(args.table, prog=PROG)
    site = args.site_column
    if site is None and "site" in table.columns:
        site = "site"
    options = {args.text_column: "--text-column"} | ({site: "--site-column"} if site else {})
    require_columns(table, options, args.table, PROG)
    if table.empty:
        raise SystemExit(f"{PROG}: {args.table}: the table has no rows.")

    empty = empty_text_rows(table[args.text_column])
    if empty:
        rows = [i + 1 for i in empty]
        what = f"{len(rows)} of {len(table)} row(s) have an empty, missing or word-less '{args.text_column}'"
        if not args.skip_empty:
            raise SystemExit(
                f"{PROG}: {args.table}: {what} (data rows {row_list(rows)}; row 1 is the first below the "
                "header). Fill or remove them, or pass --skip-empty to leave them out of the statistics."
            )
        print(f"skipped {what}: data rows {row_list(rows)}")
        table = table.drop(index=table.index[empty])
        if table.empty:
            raise SystemExit(f"{PROG}: {args.table}: no row with text left after --skip-empty.")

    try:
        stats = corpus_statistics_by_group(table, args.text_column, site)
    except ValueError as err:
        raise SystemExit(f"{PROG}: {args.table}: {err}") from None
    print(statistics_markdown(stats))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        stats.to_csv(args.out, index=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
