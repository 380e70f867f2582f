"""``reportsup-damil-predict``: run a trained DaMIL model on a scan manifest (no labels needed).

Per scan: the 17 x 4 region probability matrix and the scan-level probabilities
(``predictions.csv``), the abnormality maps and predicted region segmentation as NIfTI in the scan's
own geometry with label tables naming every value and channel, and PNG overlays of the top findings
(:mod:`lightning_modules.crossdl.damil.outputs`). For a scan read from a DICOM series, also
``dicom/<scan_id>/``: a DICOM Segmentation, Parametric Maps and a TID 1500 Structured Report referencing
that series (:mod:`lightning_modules.crossdl.damil.dicom_outputs`, issue 21 item 4; ``--no-dicom`` to
skip; scans given as NIfTI get NIfTI only). The preprocessing settings and the training set's intensity statistics come with the model. Scans
that fail validation are listed in ``skipped_scans.csv`` with the reason, never silently dropped.
The work is :meth:`reportsup.api.scans.ScanAnalyzer.predict_scans`; this is its command line.

    reportsup-damil-predict outputs/damil_multiscale/<run>/checkpoints/best-epoch07.ckpt manifest.csv \\
        --out-dir predictions

MODEL may also be a run folder (its best checkpoint) or a ``reportsup-export`` folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from datamodules.crossdl.head_ct.manifest import ManifestError
from lightning_modules.crossdl.damil.dicom_outputs import write_dicom_results
from reportsup.api.loading import ModelSourceError, UnsafeCheckpointError
from reportsup.api.scans import ScanAnalyzer, ScanModelError, scan_manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a .ckpt, a run folder or a reportsup-export folder")
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--top", type=int, default=3, help="overlays for the top findings per scan")
    parser.add_argument("--no-maps", action="store_true", help="only the probability table")
    parser.add_argument(
        "--dicom",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="DICOM SEG, Parametric Maps and SR for scans read from a DICOM series (default: on, "
        "unless --no-maps; they are made from the NIfTI maps)",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load a checkpoint that needs unpickling (only for files you trust)",
    )
    args = parser.parse_args(argv)
    if args.dicom and args.no_maps:
        parser.error("--dicom needs the NIfTI maps it is made from; drop --no-maps (or add --no-dicom).")
    dicom = not args.no_maps if args.dicom is None else args.dicom
    # the head-CT readers log what a user must know, e.g. a series stacked in slice-position order
    # although its InstanceNumbers said otherwise (issue 21 item 2); a console script has no handler
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("datamodules.crossdl.head_ct").setLevel(logging.INFO)
    if (args.out_dir / "predictions.csv").exists():
        sys.exit(f"error: {args.out_dir / 'predictions.csv'} exists; choose a new --out-dir.")
    try:
        analyzer = ScanAnalyzer.from_pretrained(args.checkpoint, trust_checkpoint=args.trust_checkpoint)
        manifest = scan_manifest(args.manifest)  # paths resolved against the manifest's folder
        args.out_dir.mkdir(parents=True, exist_ok=True)
        result = analyzer.predict_scans(
            manifest, None if args.no_maps else args.out_dir, args.top, progress=True
        )
    except (ManifestError, ScanModelError, ModelSourceError, UnsafeCheckpointError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    result.table.to_csv(args.out_dir / "predictions.csv", index=False)
    if len(result.skipped):
        result.skipped.to_csv(args.out_dir / "skipped_scans.csv", index=False)
    print(f"scans: {len(result.table)} predicted, {len(result.skipped)} skipped; written to {args.out_dir}")
    if dicom and len(result.table):
        made = write_dicom_results(
            result.table, manifest, args.out_dir, analyzer.space, analyzer.dice_thresholds, progress=True
        )
        print(made.summary())


if __name__ == "__main__":
    main()
