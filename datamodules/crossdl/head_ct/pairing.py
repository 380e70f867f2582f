"""Pair CT scans with their reports by time (Liu et al. 2023, STAR Methods, data collection).

The paper matched 56,535 head CT scans with 251,463 CT reports "so that each CT scan was paired with
the report with the smallest time difference within 24 h", giving 37,453 scan-report pairs. Here the
same rule runs on two tables:

* scans: ``scan_id``, ``patient_id`` and a study time column (``study_datetime`` by default), plus any
  other columns (e.g. ``image``), which are kept: the paired table is a scan manifest with
  ``report_id`` filled in, ready for ``reportsup-check-scans`` and the head-CT DataModule;
* reports: ``report_id``, ``patient_id`` and a report time column (``report_datetime`` by default).

Each scan gets the report of the same patient with the smallest absolute time difference, if that is
at most ``window`` (paper: 24 h). What the paper leaves open is decided here, explicitly:

* **ties** (two reports equally near): the report written after the scan is preferred (a report
  follows its scan; one written before belongs to an earlier study), then the smaller ``report_id``;
  every tied report is listed in ``tied_reports``. With ``on_tie="unmatch"`` such scans stay unpaired
  (reason ``tied``) instead.
* **a report near several scans** (e.g. several series of one study): by default each scan takes its
  nearest report, so one report may label several scans (``report_shared_by`` counts them). With
  ``exclusive=True`` each report is used at most once: pairs are taken in order of increasing time
  difference, and a scan whose nearer reports are taken falls back to its next one within the window.
* **duplicate ids**: a ``scan_id`` or ``report_id`` appearing twice is an error naming both rows.

Unpaired scans are listed with a reason (``no_report_for_patient``, ``outside_window``, ``tied``,
``reports_taken``) and a message. A timestamp that cannot be parsed (or is empty, or mixes time
zones) is an error naming the table, the row and the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from datamodules.common.tables import ReportTableError

#: the paper's pairing window (STAR Methods, data collection)
PAPER_WINDOW = pd.Timedelta(hours=24)
UNMATCHED_REASONS = ("no_report_for_patient", "outside_window", "tied", "reports_taken")
_EMPTY = ("", "nan", "NaN", "None", "<NA>", "NaT")


class PairingError(ReportTableError):
    """A scans or reports table that cannot be paired; the message names the table, row, column and fix."""


@dataclass
class PairingResult:
    """``pairs``: the paired scans (their own columns + report_id, report_datetime, hours_apart =
    report time - scan time, tied_reports, report_shared_by); ``unmatched``: scan_id, patient_id,
    the scan time, reason, message."""

    pairs: pd.DataFrame
    unmatched: pd.DataFrame


def _require(table: pd.DataFrame, columns: tuple[str, ...], source: str, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PairingError(
            f"{source}: missing column(s) {missing}; a {what} table needs {list(columns)} "
            f"(found {list(table.columns)}). Rename your columns or name yours with the time-column options."
        )


def _ids(table: pd.DataFrame, column: str, source: str, unique: bool) -> pd.Series:
    """The column as stripped strings; raises on an empty value and (if ``unique``) on a repeated one."""
    values = table[column].astype(str).str.strip()
    empty = np.flatnonzero(values.isin(_EMPTY).to_numpy())
    if len(empty):
        raise PairingError(f"{source}: row {empty[0] + 1}, column '{column}' is empty; every row needs it.")
    if unique:
        dup = values[values.duplicated()]
        if len(dup):
            rows = (np.flatnonzero((values == dup.iloc[0]).to_numpy()) + 1).tolist()
            raise PairingError(
                f"{source}: {column} {dup.iloc[0]!r} appears in rows {rows}; ids must be unique. Remove the "
                "duplicate rows (or give them distinct ids if they are different scans / reports)."
            )
    return values


def parse_times(values: pd.Series, source: str, column: str, time_format: str | None = None) -> pd.Series:
    """Parse a timestamp column; raises naming the first row that is empty or cannot be parsed.

    ``time_format``: a ``strftime`` format such as ``%Y%m%d%H%M%S`` (DICOM StudyDate + StudyTime);
    default ISO 8601 (``2019-03-01 14:22``, ``2019-03-01T14:22:05``, ``2019-03-01``).
    """
    fmt = time_format or "ISO8601"
    hint = (
        f"use the format {time_format!r}" if time_format else "use ISO 8601 such as 2019-03-01 14:22:05"
    ) + " (or pass the format of your timestamps, e.g. --time-format '%Y%m%d%H%M%S')"
    text = values.astype(str).str.strip()
    empty = np.flatnonzero((values.isna() | text.isin(_EMPTY)).to_numpy())
    if len(empty):
        raise PairingError(
            f"{source}: row {empty[0] + 1}, column '{column}' is empty; every row needs a time. Fill it or "
            "remove the row."
        )
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.reset_index(drop=True)
    try:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
    except (ValueError, TypeError):  # different UTC offsets, or offsets on some rows only
        parsed = _parse_offsets(text, fmt, source, column)
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        raise PairingError(
            f"{source}: row {bad[0] + 1}, column '{column}' = {text.iloc[bad[0]]!r} is not a time "
            f"({len(bad)} such row(s)); {hint}."
        )
    return parsed.reset_index(drop=True)


def _parse_offsets(text: pd.Series, fmt: str, source: str, column: str) -> pd.Series:
    """Times with UTC offsets: all in UTC if every row has one; else an error naming the first row
    whose convention differs from row 1's (a local time cannot be compared with an offset time)."""
    stamps = [pd.to_datetime(value, format=fmt, errors="coerce") for value in text]
    aware = [None if s is pd.NaT else s.tzinfo is not None for s in stamps]  # None: not a time
    known = [(i, a) for i, a in enumerate(aware) if a is not None]
    differs = [i for i, a in known if a != known[0][1]]
    if not differs:  # every parsed time has an offset; rows that are no time are reported by the caller
        return pd.to_datetime(text, format=fmt, utc=True, errors="coerce")
    i, first = differs[0], known[0][0]
    has = "has" if aware[i] else "has no"
    raise PairingError(
        f"{source}: row {i + 1}, column '{column}' = {text.iloc[i]!r} {has} UTC offset and row {first + 1} "
        f"({text.iloc[first]!r}) {'has' if aware[first] else 'has no'}; give every time in one convention: all "
        "local times, or all with offsets."
    )


def pair_scans_with_reports(
    scans: pd.DataFrame,
    reports: pd.DataFrame,
    window: pd.Timedelta = PAPER_WINDOW,
    *,
    scan_time: str = "study_datetime",
    report_time: str = "report_datetime",
    time_format: str | None = None,
    exclusive: bool = False,
    on_tie: Literal["first", "unmatch"] = "first",
    scans_source: str = "scans table",
    reports_source: str = "reports table",
) -> PairingResult:
    """Give each scan the nearest report of the same patient within ``window`` (see the module docstring)."""
    if on_tie not in ("first", "unmatch"):
        raise ValueError(f"on_tie must be 'first' or 'unmatch', got {on_tie!r}")
    if window < pd.Timedelta(0):
        raise ValueError(f"window must not be negative, got {window}")
    _require(scans, ("scan_id", "patient_id", scan_time), scans_source, "scans")
    _require(reports, ("report_id", "patient_id", report_time), reports_source, "reports")
    taken = [c for c in ("report_id", "report_datetime", "hours_apart") if c in scans.columns]
    if taken:
        raise PairingError(
            f"{scans_source}: already has column(s) {taken}, which the pairing writes; drop them first."
        )
    scans = scans.reset_index(drop=True)
    s = pd.DataFrame(
        {
            "scan_id": _ids(scans, "scan_id", scans_source, unique=True),
            "patient_id": _ids(scans, "patient_id", scans_source, unique=False),
            "t_scan": parse_times(scans[scan_time], scans_source, scan_time, time_format),
        }
    )
    r = pd.DataFrame(
        {
            "report_id": _ids(reports, "report_id", reports_source, unique=True),
            "patient_id": _ids(reports, "patient_id", reports_source, unique=False),
            "t_report": parse_times(reports[report_time], reports_source, report_time, time_format),
        }
    )
    if (s["t_scan"].dt.tz is None) != (r["t_report"].dt.tz is None):
        aware = scans_source if s["t_scan"].dt.tz is not None else reports_source
        raise PairingError(
            f"{aware}: times carry a UTC offset and the other table's do not; give both in the same "
            "convention (both local times, or both with offsets)."
        )

    # Every (scan, report) pair of the same patient, nearest first; the tie-break order is explicit:
    # time difference, then a report written after its scan, then report_id.
    c = s.merge(r, on="patient_id", how="inner")
    c["delta"] = (c["t_report"] - c["t_scan"]).abs()
    c["before"] = c["t_report"] < c["t_scan"]
    c = c.sort_values(["scan_id", "delta", "before", "report_id"], kind="stable", ignore_index=True)
    nearest = c.groupby("scan_id", sort=False).head(1).set_index("scan_id")
    within = c[c["delta"] <= window]
    best_delta = within.groupby("scan_id")["delta"].transform("min")
    at_best = within[within["delta"] == best_delta]
    ties = at_best.groupby("scan_id")["report_id"].agg(list)
    best = at_best.groupby("scan_id")["delta"].first()
    tied = set(ties[ties.map(len) > 1].index)

    unmatched: dict[str, tuple[str, str]] = {}
    for scan_id, patient in zip(s["scan_id"], s["patient_id"], strict=True):
        if scan_id not in nearest.index:
            unmatched[scan_id] = (
                "no_report_for_patient",
                f"no report of patient {patient!r} in the {reports_source}",
            )
        elif nearest.at[scan_id, "delta"] > window:
            row = nearest.loc[scan_id]
            unmatched[scan_id] = (
                "outside_window",
                f"nearest report {row['report_id']!r} is {_hours(row['delta']):.1f} h away "
                f"(window {_hours(window):g} h)",
            )
        elif on_tie == "unmatch" and scan_id in tied:
            unmatched[scan_id] = (
                "tied",
                f"reports {ties[scan_id]} are equally near ({_hours(best[scan_id]):.2f} h); pair it by hand "
                "or use on_tie='first'",
            )

    candidates = within[~within["scan_id"].isin(unmatched)]
    if exclusive:
        chosen = _assign_exclusively(candidates)
        for scan_id in candidates["scan_id"].unique():
            if scan_id not in chosen.index:
                first = candidates[candidates["scan_id"] == scan_id].iloc[0]
                holder = chosen.index[chosen["report_id"] == first["report_id"]][0]
                unmatched[scan_id] = (
                    "reports_taken",
                    f"every report within the window went to a nearer scan (nearest {first['report_id']!r} "
                    f"went to {holder!r}); exclusive pairing uses each report once",
                )
    else:
        chosen = candidates.groupby("scan_id", sort=False).head(1).set_index("scan_id")

    pairs = scans[s["scan_id"].isin(chosen.index).to_numpy()].copy()
    ids = s.loc[s["scan_id"].isin(chosen.index), "scan_id"].to_numpy()
    pick = chosen.loc[ids]
    pairs["report_id"] = pick["report_id"].to_numpy()
    pairs["report_datetime"] = pick["t_report"].to_numpy()
    pairs["hours_apart"] = ((pick["t_report"] - pick["t_scan"]) / pd.Timedelta(hours=1)).round(4).to_numpy()
    pairs["tied_reports"] = [
        ";".join(x for x in ties.get(scan_id, []) if x != chosen_id)
        for scan_id, chosen_id in zip(ids, pick["report_id"], strict=True)
    ]
    pairs["report_shared_by"] = pairs.groupby("report_id")["report_id"].transform("size").to_numpy()

    order = {scan_id: i for i, scan_id in enumerate(s["scan_id"])}
    rows = [
        {
            "scan_id": scan_id,
            "patient_id": s.at[order[scan_id], "patient_id"],
            scan_time: scans.at[order[scan_id], scan_time],
            "reason": reason,
            "message": message,
        }
        for scan_id, (reason, message) in sorted(unmatched.items(), key=lambda kv: order[kv[0]])
    ]
    columns = ["scan_id", "patient_id", scan_time, "reason", "message"]
    return PairingResult(pairs.reset_index(drop=True), pd.DataFrame(rows, columns=columns))


def _assign_exclusively(candidates: pd.DataFrame) -> pd.DataFrame:
    """Greedy one-to-one assignment: pairs in order of increasing time difference (ties: report after
    scan, then scan_id, then report_id), each scan and each report used once. Indexed by scan_id."""
    ordered = candidates.sort_values(["delta", "before", "scan_id", "report_id"], kind="stable")
    used_scans: set[str] = set()
    used_reports: set[str] = set()
    keep = []
    for i, scan_id, report_id in zip(ordered.index, ordered["scan_id"], ordered["report_id"], strict=True):
        if scan_id in used_scans or report_id in used_reports:
            continue
        used_scans.add(scan_id)
        used_reports.add(report_id)
        keep.append(i)
    return ordered.loc[keep].set_index("scan_id")


def _hours(delta: pd.Timedelta) -> float:
    return float(delta / pd.Timedelta(hours=1))
