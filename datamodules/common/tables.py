"""Read and validate a reports table (DESIGN.md "Data contracts").

Schema: ``report_id``, ``patient_id``, ``text``, one column per label (0/1, empty = unknown),
optional ``split``, ``site``, ``image_path`` and ``<label>_prob`` soft-target columns.
CSV, Parquet and JSONL are read. Every problem is reported with the file, the row (1-based data
row, as a spreadsheet shows it below the header) and the column, plus what to do about it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

REQUIRED_COLUMNS: tuple[str, ...] = ("report_id", "patient_id", "text")


class ReportTableError(ValueError):
    """A reports table that cannot be used as it is; the message names file, row, column and fix."""


def read_table_file(path: Path) -> pd.DataFrame:
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    try:
        if suffix in (".csv", ".csv.gz"):
            # Everything as string: ids like "007" stay ids and labels are validated by us, not guessed.
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", index_col=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".jsonl.gz"):
            return pd.read_json(path, lines=True, dtype=False)
    except UnicodeDecodeError as err:
        raise ReportTableError(
            f"{path}: not valid UTF-8 (byte {err.start}: {err.reason}). Re-save the file as UTF-8, "
            "e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`."
        ) from err
    except pd.errors.ParserError as err:
        raise ReportTableError(
            f"{path}: cannot be parsed as CSV: {str(err).strip()} (line 1 is the header). A text containing "
            "commas, quotes or line breaks must be quoted; re-export the table with quoting."
        ) from err
    except (ValueError, OSError) as err:  # malformed JSON lines, a corrupt or truncated Parquet file
        raise ReportTableError(
            f"{path}: cannot be read as {suffix.lstrip('.')}: {str(err).strip()[:300]}. "
            "Check that the file is complete and of the type its extension says."
        ) from err
    raise ReportTableError(f"{path}: unsupported file type '{path.suffix}'. Use .csv, .parquet or .jsonl.")


def _row(i: int) -> int:
    return int(i) + 1


NOT_UTF8, EMPTY_TEXT, REPLACEMENT_CHAR = (
    "text is not valid UTF-8",
    "empty text",
    "text contains U+FFFD (decoded from a wrong encoding)",
)


def text_problem(text: object) -> str | None:
    """Why a report text cannot be used (:data:`NOT_UTF8`, :data:`EMPTY_TEXT`, :data:`REPLACEMENT_CHAR`),
    or None. Shared by the table reader (which raises) and bulk labelling (which lists the row)."""
    if isinstance(text, bytes):
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            return NOT_UTF8
    if text is None or (isinstance(text, float) and np.isnan(text)) or not str(text).strip():
        return EMPTY_TEXT
    if "\ufffd" in str(text):
        return REPLACEMENT_CHAR
    if any("\udc80" <= c <= "\udcff" for c in str(text)):  # bytes kept by read_chunks(undecodable="mark")
        return NOT_UTF8
    return None


def check_text_column(df: pd.DataFrame, path: Path, id_column: str = "report_id") -> None:
    for i, text in enumerate(df["text"]):
        problem = text_problem(text)
        if problem == NOT_UTF8:
            raise ReportTableError(
                f"{path}, row {_row(i)}, column 'text': not valid UTF-8. Re-encode the text as UTF-8."
            )
        if problem == EMPTY_TEXT:
            raise ReportTableError(
                f"{path}, row {_row(i)} ({id_column}={df[id_column].iloc[i]!r}), column 'text': empty report text. "
                "Remove the row or fill in the report."
            )
        if problem == REPLACEMENT_CHAR:
            raise ReportTableError(
                f"{path}, row {_row(i)} ({id_column}={df[id_column].iloc[i]!r}), column 'text': contains U+FFFD, "
                "the mark of text decoded from a wrong encoding. Re-export the reports as UTF-8."
            )


def parse_label_column(values: pd.Series, path: Path, column: str, report_ids: pd.Series) -> np.ndarray:
    """0/1 labels as float with NaN for unknown; anything else is an error naming the row."""
    out = np.full(len(values), np.nan, dtype=np.float64)
    for i, v in enumerate(values):
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            continue
        s = str(v).strip()
        if s == "":
            continue
        if s in ("0", "1", "0.0", "1.0", "True", "False", "true", "false"):
            out[i] = 1.0 if s in ("1", "1.0", "True", "true") else 0.0
            continue
        raise ReportTableError(
            f"{path}, row {_row(i)} ({report_ids.name}={report_ids.iloc[i]!r}), column '{column}': label value {v!r} is not "
            "0, 1 or empty. Use 1 for present, 0 for absent and leave the cell empty when unknown."
        )
    return out


def parse_probability_column(values: pd.Series, path: Path, column: str, report_ids: pd.Series) -> np.ndarray:
    """Soft targets in [0, 1] (e.g. another model's probabilities); empty = unknown."""
    out = np.full(len(values), np.nan, dtype=np.float64)
    for i, v in enumerate(values):
        s = "" if v is None or v is pd.NA else str(v).strip()
        if s in ("", "nan", "NaN"):
            continue
        try:
            p = float(s)
        except ValueError:
            p = -1.0
        if not 0.0 <= p <= 1.0:
            raise ReportTableError(
                f"{path}, row {_row(i)} ({report_ids.name}={report_ids.iloc[i]!r}), column '{column}': {v!r} is not a "
                "probability in [0, 1]."
            )
        out[i] = p
    return out


def read_report_table(
    path: str | Path,
    labels: Sequence[str],
    soft_label_suffix: str | None = None,
    id_column: str = "report_id",
    required: Sequence[str] = REQUIRED_COLUMNS,
    path_key: str = "data.path",
) -> pd.DataFrame:
    """Read ``path``, validate it against the schema and ``labels``; return a clean table.

    The returned frame has string ``report_id``/``patient_id``/``text``, float label columns with
    NaN for unknown, the optional columns as present, and ``<label>_prob`` columns when
    ``soft_label_suffix`` is given. Exact duplicate rows are an error too: a duplicate would count
    twice in training and in the bootstrap.
    """
    path = Path(path)
    if not path.exists():
        raise ReportTableError(
            f"{path}: file not found. Set {path_key} to an existing CSV, Parquet or JSONL table, "
            "or run with demo=true."
        )
    df = read_table_file(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ReportTableError(
            f"{path}: missing required column(s) {missing}; found {list(df.columns)}. "
            f"This table needs {', '.join(required)}."
        )
    absent = [label for label in labels if label not in df.columns]
    if absent:
        raise ReportTableError(
            f"{path}: label column(s) {absent} named in data.labels are not in the file (columns: "
            f"{list(df.columns)}). Fix data.labels or add the column(s)."
        )
    df = df.reset_index(drop=True)
    for col in dict.fromkeys((id_column, "report_id", "patient_id")):
        blank = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if blank.any():
            i = int(np.flatnonzero(blank.to_numpy())[0])
            raise ReportTableError(
                f"{path}, row {_row(i)}, column '{col}': empty {col}. Every report needs one."
            )
        df[col] = df[col].astype(str).str.strip()
    check_text_column(df, path, id_column)
    df["text"] = df["text"].map(lambda t: t.decode("utf-8") if isinstance(t, bytes) else str(t))

    dup = df[id_column].duplicated(keep=False)
    if dup.any():
        first_rid = df.loc[dup, "report_id"].iloc[0]
        rows = [_row(i) for i in np.flatnonzero((df[id_column] == first_rid).to_numpy())]
        texts = df.loc[df[id_column] == first_rid, "text"].unique()
        what = "different text" if len(texts) > 1 else "the same text (a duplicated row)"
        raise ReportTableError(
            f"{path}, rows {rows}, column '{id_column}': {id_column} {first_rid!r} appears "
            f"{len(rows)} times with {what}. {id_column} must be unique: remove or rename duplicates."
        )

    for label in labels:
        df[label] = parse_label_column(df[label], path, label, df[id_column])
        if soft_label_suffix:
            col = f"{label}{soft_label_suffix}"
            if col not in df.columns:
                raise ReportTableError(
                    f"{path}: data.unknown_policy=soft needs a probability column '{col}' for "
                    f"label '{label}'. Add it or choose another data.unknown_policy."
                )
            df[col] = parse_probability_column(df[col], path, col, df[id_column])
    return df


def read_chunks(
    path: Path, chunk_size: int, encoding: str = "utf-8", undecodable: str = "raise"
) -> Iterator[pd.DataFrame]:
    """The table in chunks of ``chunk_size`` rows, without loading a large file at once.

    CSV/JSONL bytes that are not valid ``encoding`` stop the read (``undecodable="raise"``) or stay in
    their row as escaped bytes (``"mark"``: Python's surrogateescape) so that :func:`text_problem` lists
    that row, and only that row, as not UTF-8: one mis-encoded report must not stop an archive's labelling.
    """
    suffix = path.suffix.lower()
    errors = {"raise": "strict", "mark": "surrogateescape"}[undecodable]
    try:
        if suffix == ".csv":
            yield from pd.read_csv(
                path,
                # Arrow-backed strings (pandas' str) cannot hold escaped bytes: Python objects can
                dtype=str if undecodable == "raise" else object,
                keep_default_na=False,
                chunksize=chunk_size,
                index_col=False,
                encoding=encoding,
                encoding_errors=errors,
            )
        elif suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
                yield batch.to_pandas()
        elif suffix == ".jsonl" and undecodable == "mark":
            yield from _jsonl_chunks_keeping_bytes(path, chunk_size, encoding)
        elif suffix == ".jsonl":
            yield from pd.read_json(
                path, lines=True, dtype=False, chunksize=chunk_size, encoding=encoding, encoding_errors=errors
            )
        else:
            raise ReportTableError(
                f"{path}: unsupported file type '{path.suffix}'. Use .csv, .parquet or .jsonl."
            )
    except (ValueError, OSError, pd.errors.ParserError) as err:
        if isinstance(err, ReportTableError):
            raise
        hint = (
            f" The file is not valid {encoding}: pass its encoding (e.g. --encoding cp1252)."
            if isinstance(err, UnicodeDecodeError)
            else ""
        )
        raise ReportTableError(f"{path}: cannot be read: {str(err)[:300]}.{hint}") from err


def _jsonl_chunks_keeping_bytes(path: Path, chunk_size: int, encoding: str) -> Iterator[pd.DataFrame]:
    """JSONL rows with undecodable bytes kept as escapes (pandas' ujson rejects them), ``chunk_size``
    rows at a time; a line that is not JSON is named by its number."""
    rows: list[dict] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                rows.append(json.loads(raw.decode(encoding, errors="surrogateescape")))
            except json.JSONDecodeError as err:
                raise ReportTableError(f"{path}, line {number}: not a JSON object ({err.msg}).") from None
            if len(rows) == chunk_size:
                yield pd.DataFrame(rows, dtype=object)
                rows = []
    if rows:
        yield pd.DataFrame(rows, dtype=object)


def count_rows(path: Path) -> int | None:
    """Rows in the table, for the progress bar: Parquet metadata, the id column of a CSV (texts may span
    lines), a line count for JSONL."""
    if path.suffix.lower() == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix.lower() == ".csv":
        try:
            return len(pd.read_csv(path, usecols=["report_id"], dtype=str))
        except (ValueError, pd.errors.ParserError):
            return None
    with path.open("rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return max(lines - (path.suffix.lower() == ".csv"), 0)
