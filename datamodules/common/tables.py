"""Read and validate a reports table (DESIGN.md "Data contracts").

Schema: ``report_id``, ``patient_id``, ``text``, one column per label (0/1, empty = unknown),
optional ``split``, ``site``, ``image_path`` and ``<label>_prob`` soft-target columns.
CSV, Parquet and JSONL are read, CSV and JSONL also gzip-compressed (``.csv.gz``, ``.jsonl.gz``: issue 21,
item 7), by every reader here: :func:`read_table_file`, the streaming :func:`read_chunks` and
:func:`count_rows`. Every problem is reported with the file, the row (1-based data row, as a
spreadsheet shows it below the header) and the column, plus what to do about it; a problem found while
decoding (a line that is not JSON, bytes that are not UTF-8) names its line too (issue 21, item 5).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

REQUIRED_COLUMNS: tuple[str, ...] = ("report_id", "patient_id", "text")


class ReportTableError(ValueError):
    """A reports table that cannot be used as it is; the message names file, row, column and fix."""


SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".parquet")
UNSUPPORTED = "Use .csv, .jsonl (either may be gzip-compressed: .csv.gz, .jsonl.gz) or .parquet."


def table_suffix(path: Path) -> str:
    """The table type by extension: ``.csv``, ``.csv.gz``, ``.jsonl``, ``.jsonl.gz``, ``.parquet``, or the
    unknown suffix as it is (lower case)."""
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        return "".join(suffixes[-2:])
    return path.suffix.lower()


def _open_bytes(path: Path) -> IO[bytes]:
    """The table's bytes, decompressed when the file is ``.gz`` (for the readers that go line by line)."""
    return gzip.open(path, "rb") if table_suffix(path).endswith(".gz") else path.open("rb")


def require_rows(
    table: pd.DataFrame, path: Path, key: str | None = None, error: type[ReportTableError] = ReportTableError
) -> pd.DataFrame:
    """``table`` if it has rows; otherwise ``error`` naming the file (issue 21, item 5: a header-only table
    used to reach the split and be reported as "0 patients"); ``key`` is the config key that names it."""
    if len(table) == 0:
        what = (
            f"a header ({', '.join(map(str, table.columns))}) but no rows"
            if len(table.columns)
            else "no rows"
        )
        where = f" or point {key} at the table you meant" if key else ""
        raise error(f"{path}: the table has {what}. Add its rows{where}.")
    return table


def _encoding_hint(raw: bytes) -> str:
    """The likeliest 8-bit encoding of bytes that are not UTF-8: Latin-1 when every non-ASCII byte is a
    printable Latin-1 letter (0xA0-0xFF, where Windows-1252 agrees), else Windows-1252 if it decodes."""
    high = [b for b in raw if b >= 0x80]
    if all(b >= 0xA0 for b in high):
        return "latin1"
    try:
        raw.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin1"


def undecodable_location(path: Path, encoding: str = "utf-8") -> str | None:
    """Where ``path`` first stops being valid ``encoding``: "line L (data row R, column 'C')" for a CSV
    (rows counted as the CSV reader does, so a quoted text spanning lines is one row), "line L" for
    JSONL, with the offending text as Latin-1 shows it; None if the whole file decodes."""
    with _open_bytes(path) as f:
        data = f.read()
    try:
        data.decode(encoding)
        return None
    except UnicodeDecodeError:
        pass
    text = data.decode(encoding, errors="surrogateescape")  # bad bytes kept as U+DC80..U+DCFF
    bad = lambda s: any("\udc80" <= c <= "\udcff" for c in s)  # noqa: E731
    shown = lambda s: s.encode(encoding, "surrogateescape").decode("latin1")[:80]  # noqa: E731
    if table_suffix(path).startswith(".csv"):
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, [])
        for row_number, record in enumerate(reader, start=1):
            for j, cell in enumerate(record):
                if bad(cell):
                    column = header[j] if j < len(header) else f"#{j + 1}"
                    return (
                        f"line {reader.line_num} (data row {row_number}, column '{column}': {shown(cell)!r})"
                    )
        if bad(",".join(header)):
            return f"line 1 (the header: {shown(','.join(header))!r})"
    for number, line in enumerate(text.splitlines(), start=1):
        if bad(line):
            return f"line {number} ({shown(line)!r})"
    return "somewhere in the file"


def _not_encoding(path: Path, encoding: str) -> ReportTableError:
    with _open_bytes(path) as f:
        guess = _encoding_hint(f.read())
    where = undecodable_location(path, encoding)
    plain = path.name.removesuffix(".gz")
    name = "UTF-8" if encoding.lower().replace("-", "").replace("_", "") == "utf8" else encoding
    return ReportTableError(
        f"{path}, {where}: not valid {name}. Convert the file to UTF-8, e.g. "
        f"`iconv -f {guess} -t utf-8 {plain} > {Path(plain).stem}.utf8{Path(plain).suffix}`"
        + (" (gunzip it first)" if path.suffix.lower() == ".gz" else "")
        + f", or pass its encoding (reportsup-label --encoding {guess})."
    )


def parse_jsonl_line(path: Path, number: int, line: str) -> dict:
    """One JSONL line as a dict, or the error naming the file, the 1-based line number and the line's start
    (pandas names only a byte position)."""
    line = line.strip()
    try:
        value = json.loads(line)
        why = None if isinstance(value, dict) else f"a JSON {type(value).__name__}, not an object"
    except json.JSONDecodeError as err:
        value, why = None, f"{err.msg.removesuffix(' at')} at character {err.pos + 1}"
    if why is None:
        return value
    raise ReportTableError(
        f"{path}, line {number}: not a JSON object ({why}); the line starts {line[:60]!r}. Each line must be "
        "one complete JSON object: fix or remove that line (a line cut short is a sign of an incomplete copy)."
    )


def _jsonl_error(path: Path, encoding: str, err: Exception) -> ReportTableError:
    """Why pandas could not read a JSONL file, by line: the first line that is not a JSON object."""
    with _open_bytes(path) as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                try:
                    parse_jsonl_line(path, number, raw.decode(encoding, errors="replace"))
                except ReportTableError as found:
                    return found
    return ReportTableError(
        f"{path}: cannot be read as JSONL: {str(err).strip()[:300]}. Each line must be one JSON object."
    )


def read_table_file(path: Path, encoding: str = "utf-8", allow_empty: bool = True) -> pd.DataFrame:
    """The whole table at ``path`` (by extension, :data:`SUFFIXES`), CSV cells as strings.

    ``encoding`` is the text encoding of a CSV/JSONL file; bytes it cannot decode are an error naming the
    line, row and column. ``allow_empty=False`` refuses a table with no rows (:func:`require_rows`)."""
    path = Path(path)
    suffix = table_suffix(path)
    if suffix not in SUFFIXES:
        raise ReportTableError(f"{path}: unsupported file type '{suffix}'. {UNSUPPORTED}")
    try:
        if suffix.startswith(".csv"):
            # Everything as string: ids like "007" stay ids and labels are validated by us, not guessed.
            table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding, index_col=False)
        elif suffix == ".parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.read_json(path, lines=True, dtype=False, encoding=encoding)
    except UnicodeDecodeError:
        raise _not_encoding(path, encoding) from None
    except pd.errors.EmptyDataError:
        raise ReportTableError(
            f"{path}: the file is empty (no header, no rows). Write the table's header and rows into it."
        ) from None
    except pd.errors.ParserError as err:
        raise ReportTableError(
            f"{path}: cannot be parsed as CSV: {str(err).strip()} (line 1 is the header). A text containing "
            "commas, quotes or line breaks must be quoted; re-export the table with quoting."
        ) from err
    except (ValueError, OSError, EOFError) as err:  # malformed JSON lines, a corrupt Parquet or gzip file
        if suffix.startswith(".jsonl") and not isinstance(err, (OSError, EOFError)):
            raise _jsonl_error(path, encoding, err) from None
        raise ReportTableError(
            f"{path}: cannot be read as {suffix.lstrip('.')}: {str(err).strip()[:300]}. "
            "Check that the file is complete and of the type its extension says."
        ) from err
    return table if allow_empty else require_rows(table, path)


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
    df = require_rows(read_table_file(path), path, path_key)
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
    """The table in chunks of ``chunk_size`` rows, without loading a large file at once (``.gz`` files are
    decompressed as they stream).

    CSV/JSONL bytes that are not valid ``encoding`` stop the read (``undecodable="raise"``, naming the
    line, row and column) or stay in their row as escaped bytes (``"mark"``: Python's surrogateescape) so
    that :func:`text_problem` lists that row, and only that row, as not UTF-8: one mis-encoded report must
    not stop an archive's labelling.
    """
    path = Path(path)
    suffix = table_suffix(path)
    if suffix not in SUFFIXES:
        raise ReportTableError(f"{path}: unsupported file type '{suffix}'. {UNSUPPORTED}")
    errors = {"raise": "strict", "mark": "surrogateescape"}[undecodable]
    try:
        if suffix.startswith(".csv"):
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
        else:  # JSONL, line by line: a bad line is named by its number, bytes are kept when asked
            yield from _jsonl_chunks(path, chunk_size, encoding, errors)
    except UnicodeDecodeError:
        raise _not_encoding(path, encoding) from None
    except pd.errors.EmptyDataError:
        raise ReportTableError(f"{path}: the file is empty (no header, no rows).") from None
    except (ValueError, OSError, EOFError, pd.errors.ParserError) as err:
        if isinstance(err, ReportTableError):
            raise
        raise ReportTableError(f"{path}: cannot be read: {str(err)[:300]}.") from err


def _jsonl_chunks(path: Path, chunk_size: int, encoding: str, errors: str) -> Iterator[pd.DataFrame]:
    """JSONL rows ``chunk_size`` at a time, decoded with ``errors`` (``surrogateescape`` keeps bytes that
    pandas' ujson would reject); a line that is not a JSON object is named by its number and start."""
    rows: list[dict] = []
    # Python objects hold escaped bytes; otherwise let pandas infer types, as pandas.read_json would
    dtype = object if errors == "surrogateescape" else None
    with _open_bytes(path) as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode(encoding, errors=errors)
            except UnicodeDecodeError:
                raise _not_encoding(path, encoding) from None
            rows.append(parse_jsonl_line(path, number, line))
            if len(rows) == chunk_size:
                yield pd.DataFrame(rows, dtype=dtype)
                rows = []
    if rows:
        yield pd.DataFrame(rows, dtype=dtype)


def count_rows(path: Path) -> int | None:
    """Rows in the table, for the progress bar: Parquet metadata, the id column of a CSV (texts may span
    lines), the non-blank lines of a JSONL file; ``.gz`` files are decompressed as they are counted."""
    path = Path(path)
    suffix = table_suffix(path)
    if suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    if suffix.startswith(".csv"):
        try:
            return len(pd.read_csv(path, usecols=["report_id"], dtype=str, encoding_errors="replace"))
        except (ValueError, OSError, EOFError, pd.errors.ParserError):
            return None
    try:
        with _open_bytes(path) as f:
            return sum(1 for line in f if line.strip())
    except (OSError, EOFError):
        return None
