"""What the ``reportsup-*`` commands share: reading a user's table and naming what is wrong with it as one
``SystemExit`` message (file, column or row, and the fix), never a traceback."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from datamodules.common.tables import ReportTableError, read_table_file
from datamodules.crossdl.head_ct.scan_checks import DEFAULT_BONE_KERNELS, DEFAULT_BONE_WINDOW

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


def add_bone_window_options(parser: argparse.ArgumentParser) -> None:
    """``--bone-kernels``, ``--bone-window`` and ``--no-bone-window``: what counts as a bone-window
    reconstruction (Liu et al. 2023, Figure S3c), the same options for ``reportsup-check-scans`` and
    ``reportsup-scan-manifest`` (:func:`bone_window_option` reads the window back)."""
    parser.add_argument(
        "--bone-kernels",
        nargs="*",
        default=list(DEFAULT_BONE_KERNELS),
        metavar="REGEX",
        help="ConvolutionKernel patterns of bone reconstructions (case-insensitive search; replace the "
        f"defaults {list(DEFAULT_BONE_KERNELS)}; give none to skip the kernel test)",
    )
    parser.add_argument(
        "--bone-window",
        type=float,
        nargs=2,
        default=list(DEFAULT_BONE_WINDOW),
        metavar=("CENTER", "WIDTH"),
        help="a WindowCenter and WindowWidth at or above these are a bone window (default: %(default)s)",
    )
    parser.add_argument("--no-bone-window", action="store_true", help="skip the display-window test")


def bone_window_option(args: argparse.Namespace) -> tuple[float, float] | None:
    """The bone window of :func:`add_bone_window_options`' options (None: the window test is off)."""
    return None if args.no_bone_window else (float(args.bone_window[0]), float(args.bone_window[1]))
