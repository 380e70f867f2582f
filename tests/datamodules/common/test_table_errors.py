"""Issue 21, items 5 and 7 (report tables): every reader of :mod:`datamodules.common.tables` names the
file and the line/row/column of a problem, and reads gzip-compressed CSV and JSONL (and Parquet).

* a header-only table names its file and says it has no rows (it used to reach the split as "0 patients");
* a malformed JSONL line is named by its 1-based line number and its start (pandas names a byte position);
* a non-UTF-8 CSV names the line, the data row and the column, shows the text, and says which encoding to
  convert from or pass (pandas names a byte offset inside its read buffer);
* ``.csv.gz`` / ``.jsonl.gz`` / ``.parquet`` give the same rows as plain files to ``read_table_file``,
  ``read_report_table``, ``read_chunks`` and ``count_rows``.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from datamodules.common.reports import ReportDataModule
from datamodules.common.tables import (
    NOT_UTF8,
    ReportTableError,
    count_rows,
    read_chunks,
    read_report_table,
    read_table_file,
    text_problem,
)

HEADER = "report_id,patient_id,text,abnormal\n"
ROWS = [
    {
        "report_id": f"r{i}",
        "patient_id": f"p{i}",
        "text": f"Report {i}: no acute abnormality.",
        "abnormal": str(i % 2),
    }
    for i in range(1, 13)
]


def _gzip(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes()))
    return out


def _jsonl_broken_at_line_7(tmp_path: Path) -> Path:
    lines = [json.dumps(r) for r in ROWS]
    lines[6] = lines[6][:60]  # line 7 cut short inside its text, as an interrupted copy leaves it
    path = tmp_path / "reports.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _latin1_csv(tmp_path: Path) -> Path:
    """A CSV exported as Latin-1: row 1's text spans two lines (quoted), data row 9 holds "é" as 0xE9."""
    rows = [dict(r) for r in ROWS]
    rows[0]["text"] = "First line.\nSecond line of the same report."
    rows[8]["text"] = "Ematoma subdurale, lieve effetto massa sul ventricolo; rivalutare."
    text = pd.DataFrame(rows).to_csv(index=False).replace("rivalutare", "caff\xe9 rivalutare")
    path = tmp_path / "reports.csv"
    path.write_bytes(text.encode("latin-1"))
    return path


# -- header only ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["reports.csv", "reports.csv.gz"])
def test_a_header_only_table_names_the_file_and_says_it_has_no_rows(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(HEADER.encode()) if name.endswith(".gz") else HEADER.encode())
    expected = f"{path}: the table has a header (report_id, patient_id, text, abnormal) but no rows. Add its rows or point data.path at the table you meant."
    with pytest.raises(ReportTableError) as err:
        read_report_table(path, ["abnormal"])
    assert str(err.value) == expected
    with pytest.raises(ReportTableError) as err:  # the DataModule no longer gets as far as "0 patients"
        ReportDataModule(path=str(path), labels=["abnormal"]).setup()
    assert str(err.value) == expected and "patients" not in str(err.value)
    assert len(read_table_file(path)) == 0  # a caller that allows empty tables still gets one
    with pytest.raises(ReportTableError, match="but no rows"):
        read_table_file(path, allow_empty=False)


def test_an_empty_file_says_it_is_empty(tmp_path):
    path = tmp_path / "reports.csv"
    path.write_bytes(b"")
    with pytest.raises(ReportTableError, match=re.escape(f"{path}: the file is empty (no header, no rows).")):
        read_report_table(path, ["abnormal"])
    with pytest.raises(ReportTableError, match=re.escape(f"{path}: the file is empty")):
        list(read_chunks(path, 4))


# -- malformed JSONL -----------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_a_broken_jsonl_line_is_named_by_number_and_start_by_every_reader(tmp_path, gz):
    path = _jsonl_broken_at_line_7(tmp_path)
    path = _gzip(path) if gz else path
    expected = (
        f"{path}, line 7: not a JSON object (Unterminated string starting at character 49); the line starts "
        '\'{"report_id": "r7", "patient_id": "p7", "text": "Report 7: n\'. Each line must be one complete JSON object'
    )
    readers = {
        "read_table_file": lambda: read_table_file(path),
        "read_report_table": lambda: read_report_table(path, ["abnormal"]),
        "read_chunks": lambda: list(read_chunks(path, 4)),
        "read_chunks(mark)": lambda: list(read_chunks(path, 4, undecodable="mark")),
    }
    for name, read in readers.items():
        with pytest.raises(ReportTableError) as err:
            read()
        assert str(err.value).startswith(expected), (name, str(err.value))
        assert "position" not in str(err.value)


def test_a_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(["r2", "p2", "text"]) + "\n")
    with pytest.raises(
        ReportTableError, match=r"r.jsonl, line 3: not a JSON object \(a JSON list, not an object\)"
    ):
        read_table_file(path)


# -- not UTF-8 -----------------------------------------------------------------------------------------
def test_a_latin1_csv_names_line_row_column_and_the_conversion(tmp_path):
    path = _latin1_csv(tmp_path)
    # data row 9 is on line 11: the header, then row 1's two lines
    expected = (
        f"{path}, line 11 (data row 9, column 'text': 'Ematoma subdurale, lieve effetto massa sul ventricolo; caffé "
        "rivalutare.'): not valid UTF-8. Convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 reports.csv > "
        "reports.utf8.csv`, or pass its encoding (reportsup-label --encoding latin1)."
    )
    for read in (lambda: read_report_table(path, ["abnormal"]), lambda: list(read_chunks(path, 4))):
        with pytest.raises(ReportTableError) as err:
            read()
        assert str(err.value) == expected
    gz = _gzip(path)
    with pytest.raises(
        ReportTableError, match=r"reports.csv.gz, line 11 \(data row 9, column 'text'.*\(gunzip it first\)"
    ):
        read_table_file(gz)


def test_the_encoding_option_reads_the_latin1_csv_and_marking_flags_only_that_row(tmp_path):
    path = _latin1_csv(tmp_path)
    table = read_table_file(path, encoding="latin1")
    assert "caffé rivalutare" in table.loc[8, "text"] and len(table) == 12
    chunk = pd.concat(read_chunks(path, 5, undecodable="mark"), ignore_index=True)
    flagged = [i for i, t in enumerate(chunk["text"]) if text_problem(t) == NOT_UTF8]
    assert flagged == [8]


def test_a_latin1_jsonl_names_its_line(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in ROWS[:4]]
    lines[2] = lines[2].replace("no acute", "nessuna novit\xe0 acuta")
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(
        ReportTableError,
        match=r"r.jsonl, line 3 \('\{.*novità acuta.*'\): not valid UTF-8\. .*iconv -f latin1",
    ):
        read_table_file(path)


# -- gzip, Parquet and unsupported types -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_every_reader_reads_gzip_and_parquet_tables(tmp_path, kind):
    frame = pd.DataFrame(ROWS)
    frame.loc[3, "text"] = "A report, with a comma\nand a line break."
    plain = tmp_path / f"reports.{kind}"
    if kind == "csv":
        frame.to_csv(plain, index=False)
    elif kind == "jsonl":
        frame.to_json(plain, orient="records", lines=True)
    else:
        frame.to_parquet(plain)
    paths = [plain] + ([_gzip(plain)] if kind != "parquet" else [])
    for path in paths:
        table = read_table_file(path)
        assert table["text"].tolist() == frame["text"].tolist(), path
        assert read_report_table(path, ["abnormal"])["abnormal"].tolist() == [
            float(i % 2) for i in range(1, 13)
        ]
        for mode in ("raise", "mark"):
            chunks = list(read_chunks(path, 5, undecodable=mode))
            assert [len(c) for c in chunks] == [5, 5, 2], (path, mode)
            assert pd.concat(chunks)["report_id"].astype(str).tolist() == frame["report_id"].tolist()
        assert count_rows(path) == 12, path


def test_a_cut_gzip_and_an_unsupported_type_are_named(tmp_path):
    plain = tmp_path / "reports.csv"
    pd.DataFrame(ROWS * 50).to_csv(plain, index=False)
    gz = _gzip(plain)
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(
        ReportTableError,
        match=rf"{re.escape(str(gz))}: cannot be read as csv.gz: .*Check that the file is complete",
    ):
        read_table_file(gz)
    with pytest.raises(ReportTableError, match=rf"{re.escape(str(gz))}: cannot be read: "):
        list(read_chunks(gz, 10))
    xlsx = tmp_path / "reports.xlsx"
    xlsx.write_bytes(b"PK")
    for read in (lambda: read_table_file(xlsx), lambda: list(read_chunks(xlsx, 4))):
        with pytest.raises(
            ReportTableError, match=r"unsupported file type '.xlsx'\. Use .csv, .jsonl .*\.csv\.gz"
        ):
            read()
