"""``reportsup-pair-reports``: pair each CT scan with the nearest report of the same patient within a time
window (Liu et al. 2023: 24 h), the command line of :mod:`datamodules.crossdl.head_ct.pairing`.

Writes, in ``--out-dir`` (never over existing files): ``paired_manifest.csv`` (the scans table's rows
and columns plus report_id, report_datetime, hours_apart, tied_reports, report_shared_by: a scan
manifest for ``reportsup-check-scans``) and ``unpaired_scans.csv`` (scan_id, patient_id, the scan
time, reason, message).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from datamodules.common.tables import ReportTableError, read_table_file
from datamodules.crossdl.head_ct.pairing import PAPER_WINDOW, pair_scans_with_reports

OUTPUTS = ("paired_manifest.csv", "unpaired_scans.csv")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scans", type=Path, help="scans table (CSV/Parquet/JSONL): scan_id, patient_id, time")
    parser.add_argument("reports", type=Path, help="reports table: report_id, patient_id, time")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument(
        "--window-hours",
        type=float,
        default=PAPER_WINDOW / pd.Timedelta(hours=1),
        help="largest |report time - scan time| of a pair (default: the paper's %(default)g h)",
    )
    parser.add_argument("--scan-time-column", default="study_datetime")
    parser.add_argument("--report-time-column", default="report_datetime")
    parser.add_argument(
        "--time-format",
        default=None,
        help="strftime format of both tables' times, e.g. '%%Y%%m%%d%%H%%M%%S' (default: ISO 8601)",
    )
    parser.add_argument(
        "--exclusive",
        action="store_true",
        help="use each report for at most one scan (nearest pairs first); default: a report may serve "
        "several scans of its study",
    )
    parser.add_argument(
        "--on-tie",
        choices=["first", "unmatch"],
        default="first",
        help="equally near reports: take the one after the scan, then the smaller report_id (first), or "
        "leave the scan unpaired (unmatch); either way ties are listed",
    )
    args = parser.parse_args(argv)
    if args.window_hours < 0:
        parser.error("--window-hours must not be negative")
    existing = [args.out_dir / name for name in OUTPUTS if (args.out_dir / name).exists()]
    if existing:
        sys.exit(f"error: {existing[0]} exists; choose a new --out-dir (nothing you made is overwritten).")
    try:
        scans, reports = read_table_file(args.scans), read_table_file(args.reports)
        result = pair_scans_with_reports(
            scans,
            reports,
            pd.Timedelta(hours=args.window_hours),
            scan_time=args.scan_time_column,
            report_time=args.report_time_column,
            time_format=args.time_format,
            exclusive=args.exclusive,
            on_tie=args.on_tie,
            scans_source=str(args.scans),
            reports_source=str(args.reports),
        )
    except (ReportTableError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    result.pairs.to_csv(args.out_dir / OUTPUTS[0], index=False)
    result.unmatched.to_csv(args.out_dir / OUTPUTS[1], index=False)
    pairs, unmatched = result.pairs, result.unmatched
    print(
        f"scans: {len(scans)}, paired: {len(pairs)}, unpaired: {len(unmatched)} "
        f"(window {args.window_hours:g} h, {'exclusive' if args.exclusive else 'nearest report per scan'})"
    )
    for reason, n in unmatched["reason"].value_counts().items():
        print(f"  {reason}: {n}")
    if len(pairs):
        n_tied = int((pairs["tied_reports"] != "").sum())
        n_shared = int((pairs["report_shared_by"] > 1).sum())
        print(
            f"median |hours apart| {pairs['hours_apart'].abs().median():.2f}; "
            f"{n_tied} pair(s) chosen among equally near reports; {n_shared} scan(s) share their report"
        )
    print(f"written: {', '.join(str(args.out_dir / n) for n in OUTPUTS)}")


if __name__ == "__main__":
    main()
