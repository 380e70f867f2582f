import json

import pandas as pd
import pytest

from datamodules.common.tables import ReportTableError, read_report_table

GOOD = "report_id,patient_id,text,abnormal\nr1,p1,Normal study.,0\nr2,p2,Acute infarct.,1\nr3,p3,Unclear.,\n"


def _write(tmp_path, content, name="t.csv", mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def test_good_csv_reads_and_masks_empty_labels(tmp_path):
    df = read_report_table(_write(tmp_path, GOOD), ["abnormal"])
    assert df["abnormal"].tolist()[:2] == [0.0, 1.0] and pd.isna(df["abnormal"].iloc[2])


def test_parquet_and_jsonl(tmp_path):
    df = pd.DataFrame(
        {"report_id": ["a", "b"], "patient_id": ["p", "q"], "text": ["x y", "z"], "abnormal": [1, None]}
    )
    df.to_parquet(tmp_path / "t.parquet")
    assert read_report_table(tmp_path / "t.parquet", ["abnormal"])["abnormal"].iloc[0] == 1.0
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in df.to_dict("records")))
    assert pd.isna(read_report_table(tmp_path / "t.jsonl", ["abnormal"])["abnormal"].iloc[1])


@pytest.mark.parametrize(
    "content,labels,needles",
    [
        ("report_id,text,abnormal\nr1,x,0\n", ["abnormal"], ["missing required column", "patient_id"]),
        (GOOD + "r1,p9,Different text.,1\n", ["abnormal"], ["rows [1, 4]", "'report_id'", "different text"]),
        (
            GOOD + "r4,p4,Text.,2\n",
            ["abnormal"],
            ["row 4", "report_id='r4'", "column 'abnormal'", "'2'", "0, 1 or empty"],
        ),
        (GOOD + "r4,p4,Text.,yes\n", ["abnormal"], ["row 4", "'yes'"]),
        (GOOD + "r4,p4,,1\n", ["abnormal"], ["row 4", "column 'text'", "empty report text"]),
        (GOOD, ["abnormal", "mass"], ["['mass']", "data.labels"]),
        (GOOD + "r4,,Text.,1\n", ["abnormal"], ["row 4", "'patient_id'"]),
    ],
)
def test_bad_input_names_file_row_column(tmp_path, content, labels, needles):
    path = _write(tmp_path, content)
    with pytest.raises(ReportTableError) as err:
        read_report_table(path, labels)
    message = str(err.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_non_utf8_file(tmp_path):
    path = _write(
        tmp_path, "report_id,patient_id,text,abnormal\nr1,p1,caf\xe9 lesion,1\n".encode("latin-1"), mode="wb"
    )
    with pytest.raises(ReportTableError, match="not valid UTF-8.*iconv"):
        read_report_table(path, ["abnormal"])


def test_missing_file_names_the_key(tmp_path):
    with pytest.raises(ReportTableError, match="data.path"):
        read_report_table(tmp_path / "nope.csv", ["abnormal"])


def test_soft_policy_needs_probability_column(tmp_path):
    with pytest.raises(ReportTableError, match="abnormal_prob"):
        read_report_table(_write(tmp_path, GOOD), ["abnormal"], soft_label_suffix="_prob")
    soft = "report_id,patient_id,text,abnormal,abnormal_prob\nr1,p1,x,,0.7\nr2,p2,y,1,\n"
    df = read_report_table(_write(tmp_path, soft, "s.csv"), ["abnormal"], soft_label_suffix="_prob")
    assert df["abnormal_prob"].iloc[0] == pytest.approx(0.7)


def test_unquoted_comma_gives_a_parse_error_with_the_line(tmp_path):
    path = _write(tmp_path, GOOD + "r4,p4,Hematoma, left side,1\n")
    with pytest.raises(ReportTableError, match=r"cannot be parsed as CSV.*line 5.*quoted"):
        read_report_table(path, ["abnormal"])


def test_malformed_jsonl_and_corrupt_parquet(tmp_path):
    bad_json = _write(tmp_path, '{"report_id": "a", "patient_id": "p", "text": "x"}\n{not json\n', "t.jsonl")
    with pytest.raises(ReportTableError, match=r"t.jsonl, line 2: not a JSON object .*starts '\{not json'"):
        read_report_table(bad_json, [])
    bad_parquet = _write(tmp_path, b"PAR1 this is not a parquet file", "t.parquet", mode="wb")
    with pytest.raises(ReportTableError, match="cannot be read as parquet"):
        read_report_table(bad_parquet, [])
