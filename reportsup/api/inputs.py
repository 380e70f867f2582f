"""What the text APIs accept as reports: a list of texts, a DataFrame, or the path of a CSV / Parquet /
JSONL table (the reports-table contract of DESIGN.md: ``report_id``, ``text``, optional ``patient_id``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from datamodules.common.tables import SUFFIXES, ReportTableError, read_table_file, table_suffix

TABLE_SUFFIXES = SUFFIXES  # .csv, .jsonl (either may be gzipped), .parquet: the tables reader's
Reports = Sequence[str] | pd.DataFrame | str | Path


def reports_table(reports: Reports, text_column: str = "text", id_column: str = "report_id") -> pd.DataFrame:
    """A table with ``report_id`` and ``text`` (other columns kept) from any accepted input.

    A list of texts gets the ids ``"0"``, ``"1"``, ...; a table without ``id_column`` gets its row
    positions. A single string is read as a table path (a report text must come in a list)."""
    if isinstance(reports, (str, Path)):
        path = Path(reports)
        if table_suffix(path) not in TABLE_SUFFIXES:
            raise TypeError(
                f"{str(reports)[:60]!r}: a single string is read as the path of a {'/'.join(TABLE_SUFFIXES)} "
                "table; to label report texts pass a list, e.g. predict([text])."
            )
        if not path.is_file():
            raise FileNotFoundError(f"{path}: report table not found.")
        table = read_table_file(path)
        where = str(path)
    elif isinstance(reports, pd.DataFrame):
        table, where = reports, "the DataFrame"
    elif isinstance(reports, Sequence):
        bad = [i for i, t in enumerate(reports) if not isinstance(t, str)]
        if bad:
            raise TypeError(
                f"reports[{bad[0]}] is {type(reports[bad[0]]).__name__}, not a report text (str)."
            )
        return pd.DataFrame({"report_id": [str(i) for i in range(len(reports))], "text": list(reports)})
    else:
        raise TypeError(
            f"reports: a list of texts, a DataFrame or a table path, not {type(reports).__name__}."
        )
    if text_column not in table.columns:
        raise ReportTableError(
            f"{where}: no column {text_column!r} (columns: {list(table.columns)}); pass text_column=..."
        )
    table = table.rename(columns={text_column: "text"}) if text_column != "text" else table.copy()
    if id_column in table.columns:
        table = table.rename(columns={id_column: "report_id"}) if id_column != "report_id" else table
    else:
        table.insert(0, "report_id", [str(i) for i in range(len(table))])
    return table.reset_index(drop=True)
