"""``reportsup-register-atlas``: the command line of :mod:`datamodules.crossdl.head_ct.registration` (elastix
affine + B-spline registration of an atlas to every scan of a manifest; see that module)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from datamodules.crossdl.head_ct.registration import (  # noqa: F401  (re-exported for users of the old path)
    CENTRE_METHODS,
    Atlas,
    RegistrationResult,
    RegistrationSettings,
    parse_atlas,
    register_manifest,
    register_one,
)


def main(argv: Sequence[str] | None = None) -> None:
    from datamodules.crossdl.head_ct.manifest import read_scan_manifest

    parser = argparse.ArgumentParser(
        description="Register an atlas to every scan of a manifest (elastix affine + B-spline)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "manifest", type=Path, help="scan manifest (CSV/Parquet/JSONL): scan_id, patient_id, image"
    )
    parser.add_argument(
        "--atlas", type=parse_atlas, action="append", required=True, help="NAME=IMAGE,LABELS (repeatable)"
    )
    parser.add_argument(
        "--out-dir", type=Path, required=True, help="masks, logs, report and the new manifest"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    parser.add_argument(
        "--max-iterations", type=int, default=None, help="per resolution (elastix default 256)"
    )
    parser.add_argument("--grid-spacing", type=float, default=20.0, help="B-spline control-point spacing, mm")
    parser.add_argument("--volume-range", type=float, nargs=2, default=(0.6, 1.6), metavar=("LO", "HI"))
    parser.add_argument("--min-ncc", type=float, default=0.8)
    parser.add_argument(
        "--centre",
        choices=sorted(CENTRE_METHODS),
        default="gravity",
        help="initial alignment of the affine stage: centres of gravity (default; replaces the paper's "
        "simulated-annealing centring), image centres, or none",
    )
    args = parser.parse_args(argv)
    names = [a.name for a in args.atlas]
    if len(set(names)) != len(names):
        parser.error(f"--atlas names must be unique, got {names}")
    manifest = read_scan_manifest(args.manifest)
    threads = max(1, (os.cpu_count() or 1) // max(1, args.workers))
    settings = RegistrationSettings(
        args.max_iterations, args.grid_spacing, tuple(args.volume_range), args.min_ncc, threads, args.centre
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out, report = register_manifest(manifest, args.atlas, args.out_dir, settings, args.workers)
    report.to_csv(args.out_dir / "registration_report.csv", index=False)
    suffix = "".join(args.manifest.suffixes) if args.manifest.suffix != ".gz" else ".csv"
    out_manifest = args.out_dir / f"manifest_registered{'.parquet' if suffix == '.parquet' else '.csv'}"
    if out_manifest.suffix == ".parquet":
        out.to_parquet(out_manifest, index=False)
    else:
        out.to_csv(out_manifest, index=False)
    counts = report["status"].value_counts().to_dict()
    done = report[report["status"].isin(["ok", "review"])]
    print(f"registrations: {counts}")
    if len(done):
        print(
            f"seconds per registration: {done['seconds'].mean():.1f} (median {done['seconds'].median():.1f})"
        )
    for row in report[report["status"].isin(["failed", "review"])].itertuples():
        print(f"  {row.status}: {row.scan_id} (atlas {row.atlas}): {row.message}")
    print(f"report: {args.out_dir / 'registration_report.csv'}\nmanifest: {out_manifest}")
    if counts.get("failed"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
