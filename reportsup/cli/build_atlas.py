"""``reportsup-build-atlas``: register N scans to a reference scan with elastix and average them into an
average-CT atlas (Liu et al. 2023 averaged 10 randomly selected scans), the command line of
:mod:`datamodules.crossdl.head_ct.atlas`.

Scans are given as paths, or drawn at random from a scan manifest (``--manifest``, ``--n-scans``,
``--seed``; the reference's own row is never drawn). Writes ``average_ct.nii.gz`` (reference grid),
``average_ct_regions.nii.gz`` (with ``--reference-labels``), ``atlas_report.csv`` and elastix logs in
``--out-dir``. Then: ``reportsup-register-atlas MANIFEST --atlas average=OUT/average_ct.nii.gz,OUT/average_ct_regions.nii.gz``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datamodules.common.tables import ReportTableError
from datamodules.crossdl.head_ct.atlas import (
    ATLAS_IMAGE,
    PAPER_N_SCANS,
    AtlasError,
    AtlasSettings,
    build_average_atlas,
)
from datamodules.crossdl.head_ct.registration import CENTRE_METHODS, RegistrationSettings


def draw_scans(manifest: Path, n: int, seed: int, reference: Path) -> list[str]:
    """``n`` image paths drawn at random (numpy, ``seed``) from the manifest, the reference excluded."""
    from datamodules.crossdl.head_ct.manifest import read_scan_manifest

    images = [p for p in read_scan_manifest(manifest)["image"] if Path(p).resolve() != reference.resolve()]
    if len(images) < n:
        raise AtlasError(f"{manifest}: {len(images)} scan(s) besides the reference, --n-scans asks for {n}.")
    rng = np.random.default_rng(seed)
    return [images[i] for i in sorted(rng.choice(len(images), size=n, replace=False))]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "images", nargs="*", type=Path, help="scans to average (NIfTI files or DICOM folders)"
    )
    parser.add_argument("--reference", type=Path, required=True, help="the scan every other is registered to")
    parser.add_argument("--reference-labels", type=Path, help="region map drawn on the reference (optional)")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, help="draw the scans at random from this scan manifest")
    parser.add_argument("--n-scans", type=int, default=PAPER_N_SCANS, help="with --manifest (paper: 10)")
    parser.add_argument("--seed", type=int, default=0, help="with --manifest")
    parser.add_argument(
        "--affine-only", action="store_true", help="affine registration only (default: affine + B-spline)"
    )
    parser.add_argument("--max-iterations", type=int, default=None, help="per resolution (elastix: 256)")
    parser.add_argument("--grid-spacing", type=float, default=20.0, help="B-spline control points, mm")
    parser.add_argument(
        "--centre",
        choices=sorted(CENTRE_METHODS),
        default="gravity",
        help="initial alignment (default: centres of gravity; replaces the paper's simulated annealing)",
    )
    parser.add_argument("--min-ncc", type=float, default=0.5, help="least correlation to enter the average")
    parser.add_argument("--include-reference", action="store_true", help="average the reference in too")
    args = parser.parse_args(argv)
    if bool(args.images) == bool(args.manifest):
        parser.error("give the scans either as paths or with --manifest (not both, not neither)")
    if (args.out_dir / ATLAS_IMAGE).exists():
        sys.exit(f"error: {args.out_dir / ATLAS_IMAGE} exists; choose a new --out-dir.")
    registration = RegistrationSettings(
        max_iterations=args.max_iterations,
        grid_spacing_mm=args.grid_spacing,
        threads=os.cpu_count() or 1,
        centre=args.centre,
    )
    settings = AtlasSettings(
        registration,
        ("affine",) if args.affine_only else ("affine", "bspline"),
        args.min_ncc,
        args.include_reference,
    )
    try:
        images = args.images or draw_scans(args.manifest, args.n_scans, args.seed, args.reference)
        built = build_average_atlas(images, args.reference, args.out_dir, args.reference_labels, settings)
    except (AtlasError, ReportTableError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    report = built.report
    print(f"averaged {built.n_averaged} of {len(report)} scan(s) on {args.reference}'s grid")
    for row in report[report["status"] != "included"].itertuples():
        print(f"  {row.status}: {row.image}: {row.message}")
    print(f"atlas: {built.image}" + (f"\nregions: {built.labels}" if built.labels else ""))
    if built.labels is None:
        print("no --reference-labels: draw the 17 regions on the average image (as the paper did)")


if __name__ == "__main__":
    main()
