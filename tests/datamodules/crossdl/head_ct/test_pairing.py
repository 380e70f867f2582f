"""Scan-report pairing by time (Liu et al. 2023: nearest report within 24 h), on a hand-built cohort."""

from __future__ import annotations

import pandas as pd
import pytest

from datamodules.crossdl.head_ct.pairing import PairingError, pair_scans_with_reports, parse_times
from reportsup.cli import pair_reports

SCANS = pd.DataFrame(
    [
        # scan_id, patient_id, study_datetime, image
        ("S1", "P1", "2020-01-01 10:00", "dicom/S1"),  # R2 3 h before beats R1 4 h after
        ("S2", "P1", "2020-01-03 10:00", "dicom/S2"),  # nearest is R3, 26 h later: outside the window
        ("S3", "P2", "2020-02-01 08:00", "dicom/S3"),  # R4 2 h after ties with R5 2 h before
        ("S4", "P3", "2020-02-01 08:00", "dicom/S4"),  # P3 has no report
        ("S5", "P4", "2020-03-01 09:00", "dicom/S5"),  # two series of one study: R6 is 2 h / 1.5 h away,
        ("S6", "P4", "2020-03-01 09:30", "dicom/S6"),  # R7 23 h / 22.5 h
        ("S7", "P5", "2020-04-01 00:00", "dicom/S7"),  # R9 exactly 24 h later: inside (<=)
    ],
    columns=["scan_id", "patient_id", "study_datetime", "image"],
)
REPORTS = pd.DataFrame(
    [
        ("R1", "P1", "2020-01-01 14:00"),
        ("R2", "P1", "2020-01-01 07:00"),
        ("R3", "P1", "2020-01-04 12:00"),
        ("R4", "P2", "2020-02-01 10:00"),
        ("R5", "P2", "2020-02-01 06:00"),
        ("R6", "P4", "2020-03-01 11:00"),
        ("R7", "P4", "2020-03-02 08:00"),
        ("R8", "P9", "2020-01-01 10:00"),  # same time as S1, other patient: never paired with it
        ("R9", "P5", "2020-04-02 00:00"),
    ],
    columns=["report_id", "patient_id", "report_datetime"],
)


def _pairs(result) -> dict[str, str]:
    return dict(zip(result.pairs["scan_id"], result.pairs["report_id"], strict=True))


def test_nearest_report_of_the_same_patient_within_24_hours():
    result = pair_scans_with_reports(SCANS, REPORTS)
    assert _pairs(result) == {"S1": "R2", "S3": "R4", "S5": "R6", "S6": "R6", "S7": "R9"}
    p = result.pairs.set_index("scan_id")
    assert p.loc["S1", "hours_apart"] == -3.0 and p.loc["S7", "hours_apart"] == 24.0
    assert p.loc["S3", "tied_reports"] == "R5" and p.loc["S1", "tied_reports"] == ""  # tie: after the scan
    assert p.loc["S5", "report_shared_by"] == 2 and p.loc["S1", "report_shared_by"] == 1
    assert p.loc["S1", "image"] == "dicom/S1"  # the scans' own columns stay: a manifest
    u = result.unmatched.set_index("scan_id")
    assert u["reason"].to_dict() == {"S2": "outside_window", "S4": "no_report_for_patient"}
    assert "'R3' is 26.0 h away (window 24 h)" in u.loc["S2", "message"]
    assert "no report of patient 'P3'" in u.loc["S4", "message"]


def test_window_ties_and_exclusive_pairing_are_options():
    # A 1-hour window keeps none of these pairs but nothing else changes.
    narrow = pair_scans_with_reports(SCANS, REPORTS, pd.Timedelta(hours=1))
    assert narrow.pairs.empty and len(narrow.unmatched) == len(SCANS)
    # Ties can leave the scan unpaired instead.
    strict = pair_scans_with_reports(SCANS, REPORTS, on_tie="unmatch")
    assert "S3" not in _pairs(strict)
    tie = strict.unmatched.set_index("scan_id").loc["S3"]
    assert tie["reason"] == "tied" and "['R4', 'R5'] are equally near (2.00 h)" in tie["message"]
    # Exclusive: the nearer scan S6 (1.5 h) takes R6, S5 falls back to R7 (23 h).
    exclusive = pair_scans_with_reports(SCANS, REPORTS, exclusive=True)
    assert _pairs(exclusive) == {"S1": "R2", "S3": "R4", "S5": "R7", "S6": "R6", "S7": "R9"}
    assert (exclusive.pairs["report_shared_by"] == 1).all()
    # Without R7, S5 has no report left.
    alone = pair_scans_with_reports(SCANS, REPORTS[REPORTS["report_id"] != "R7"], exclusive=True)
    s5 = alone.unmatched.set_index("scan_id").loc["S5"]
    assert s5["reason"] == "reports_taken" and "'R6' went to 'S6'" in s5["message"]


def test_timestamp_formats_and_time_zones():
    dicom = SCANS.assign(study_datetime=["20200101100000"] * len(SCANS))
    reports = REPORTS.assign(report_datetime=["20200101070000"] * len(REPORTS))
    result = pair_scans_with_reports(dicom, reports, time_format="%Y%m%d%H%M%S")
    assert result.pairs.set_index("scan_id").loc["S1", "hours_apart"] == -3.0
    utc = SCANS.assign(study_datetime=[t + "+01:00" for t in SCANS["study_datetime"]])
    with pytest.raises(PairingError, match="scans table: times carry a UTC offset and the other"):
        pair_scans_with_reports(utc, REPORTS)
    rep_utc = REPORTS.assign(report_datetime=[t + "+00:00" for t in REPORTS["report_datetime"]])
    shifted = pair_scans_with_reports(utc, rep_utc).pairs.set_index("scan_id")
    assert shifted.loc["S1", "hours_apart"] == -2.0  # 07:00 UTC is 2 h before 10:00+01:00
    # Different offsets within one table are converted to UTC, not an error.
    mixed = parse_times(pd.Series(["2020-01-01 10:00+01:00", "2020-01-01 10:00+05:00"]), "t", "c")
    assert (mixed.iloc[0] - mixed.iloc[1]) == pd.Timedelta(hours=4)


@pytest.mark.parametrize(
    ("table", "row", "column", "value", "match"),
    [
        ("reports", 3, "report_datetime", "2020-13-45", "reports table: row 3, column 'report_datetime' = "),
        ("reports", 2, "report_datetime", "", "reports table: row 2, column 'report_datetime' is empty"),
        ("scans", 5, "study_datetime", "yesterday", "scans table: row 5, column 'study_datetime' = 'yester"),
        (
            "scans",
            4,
            "study_datetime",
            "2020-02-01 08:00+05:00",
            "row 4, column .study_datetime. = .2020-02-01 08:00.05:00. has UTC offset and row 1",
        ),
        ("scans", 3, "scan_id", "S1", r"scans table: scan_id 'S1' appears in rows \[1, 3\]"),
        ("reports", 9, "report_id", "R1", r"reports table: report_id 'R1' appears in rows \[1, 9\]"),
        ("scans", 2, "patient_id", " ", "scans table: row 2, column 'patient_id' is empty"),
    ],
)
def test_bad_rows_are_errors_naming_the_table_row_and_column(table, row, column, value, match):
    scans, reports = SCANS.copy(), REPORTS.copy()
    frame = scans if table == "scans" else reports
    frame.loc[row - 1, column] = value
    with pytest.raises(PairingError, match=match):
        pair_scans_with_reports(scans, reports)


def test_missing_and_clashing_columns():
    with pytest.raises(PairingError, match=r"missing column\(s\) \['report_datetime'\]"):
        pair_scans_with_reports(SCANS, REPORTS.rename(columns={"report_datetime": "written"}))
    renamed = pair_scans_with_reports(
        SCANS, REPORTS.rename(columns={"report_datetime": "w"}), report_time="w"
    )
    assert len(renamed.pairs) == 5
    with pytest.raises(PairingError, match=r"already has column\(s\) \['report_id'\]"):
        pair_scans_with_reports(SCANS.assign(report_id="x"), REPORTS)
    parsed = parse_times(pd.Series(pd.to_datetime(["2020-01-01"])), "t", "c")  # Parquet datetimes pass
    assert parsed.iloc[0] == pd.Timestamp("2020-01-01")


def test_pair_reports_command(tmp_path, capsys):
    SCANS.to_csv(tmp_path / "scans.csv", index=False)
    REPORTS.to_csv(tmp_path / "reports.csv", index=False)
    out = tmp_path / "paired"
    pair_reports.main([str(tmp_path / "scans.csv"), str(tmp_path / "reports.csv"), "--out-dir", str(out)])
    paired = pd.read_csv(out / "paired_manifest.csv", dtype=str)
    assert dict(zip(paired["scan_id"], paired["report_id"], strict=True))["S1"] == "R2"
    assert pd.read_csv(out / "unpaired_scans.csv")["reason"].tolist() == [
        "outside_window",
        "no_report_for_patient",
    ]
    printed = capsys.readouterr().out
    assert "scans: 7, paired: 5, unpaired: 2" in printed and "1 pair(s) chosen among equally near" in printed
    with pytest.raises(SystemExit, match="exists; choose a new --out-dir"):
        pair_reports.main([str(tmp_path / "scans.csv"), str(tmp_path / "reports.csv"), "--out-dir", str(out)])
    REPORTS.assign(report_datetime="soon").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SystemExit, match=r"bad.csv: row 1, column 'report_datetime' = 'soon'"):
        pair_reports.main(
            [str(tmp_path / "scans.csv"), str(tmp_path / "bad.csv"), "--out-dir", str(tmp_path / "x")]
        )
