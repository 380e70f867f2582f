"""What the ``reportsup-*`` commands share: reading a user's table and naming what is wrong with it as one
``SystemExit`` message (file, column or row, and the fix), never a traceback."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from datamodules.common.tables import ReportTableError, read_table_file

PROG = "reportsup"
SHOW_ROWS = 10  # how many offending row numbers a message names
#: the W&B group of comparison runs (written by reportsup-compare, read by reportsup-wandb-report --comparisons)
COMPARE_GROUP = "reportsup-compare"


def read_table(path: Path, prog: str = PROG) -> pd.DataFrame:
    """Read CSV, Parquet or JSONL by extension; every failure becomes ``SystemExit`` naming the file."""
    if not path.is_file():
        raise SystemExit(f"{prog}: {path}: no such file. Give the path of a .csv, .parquet or .jsonl table.")
    try:
        return read_table_file(path)
    except ReportTableError as err:
        raise SystemExit(f"{prog}: {err}") from None


def require_columns(table: pd.DataFrame, options: dict[str, str], path: Path, prog: str = PROG) -> None:
    """``SystemExit`` naming each missing column with its option (``{column: "--option"}``) and the
    columns the table has."""
    missing = [f"'{c}' ({option})" for c, option in options.items() if c not in table.columns]
    if missing:
        raise SystemExit(
            f"{prog}: {path}: no column {', '.join(missing)}; the table has "
            f"{', '.join(repr(str(c)) for c in table.columns)}. Give the right column name with that option."
        )


def row_list(rows: Sequence[int]) -> str:
    """``"3, 7, 12"`` or ``"3, 7, ... (+40 more)"`` for data rows numbered from 1."""
    shown = ", ".join(str(r) for r in rows[:SHOW_ROWS])
    return shown + (f", ... (+{len(rows) - SHOW_ROWS} more)" if len(rows) > SHOW_ROWS else "")
