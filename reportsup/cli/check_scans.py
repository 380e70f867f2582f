"""``reportsup-check-scans``: validate a head-CT manifest before training, quarantine bad scans, and
estimate the resources a run will need before anything is cached.

Every row is checked by :func:`datamodules.crossdl.head_ct.dicom_series.validate_manifest_row`, the
check the DataModule's setup and prediction run too: the scan's headers (missing, duplicated or unevenly
spaced slices, mixed series, non-CT modality, multi-frame files, undecodable transfer syntax, truncated
or absent pixel data, fewer than ``--min-slices`` slices as Liu et al. 2023 Figure S3a, bone-window
reconstructions by kernel or window as Figure S3c: ``--bone-kernels`` / ``--bone-window``), a NIfTI's
voxels when its header allows NaN / inf, and its mask files (exist, readable, the scan's shape and voxel
grid). A series whose InstanceNumbers disagree with the slice positions is read in position order and
listed (issue 21 item 2). With ``--labels`` every scan's report must have labels; with ``--decode`` the
pixels are decoded too, as the DataModule loads them (slower; catches pixel data that does not decode).
Writes, in ``--out-dir`` (never over existing files):

* ``checked_manifest.csv``: the usable scans (absolute paths, ``scan_check = ok-v<N>``: the DataModule
  then skips re-validating them; ``reordered``: slices read in another place than their InstanceNumber
  says, 0 for most series);
* ``quarantine.csv``: scan_id, patient_id, image, reason, message for each scan left out;
* ``resources.json``: cache disk, host RAM and accelerator memory estimates
  (:mod:`reportsup.runner.resources`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from datamodules.common.tables import ReportTableError, read_table_file
from datamodules.crossdl.head_ct.datamodule import CHECKED_COLUMN, CHECKED_OK
from datamodules.crossdl.head_ct.dicom_series import ScanError, validate_manifest_row
from datamodules.crossdl.head_ct.manifest import read_scan_manifest, scan_labels
from datamodules.crossdl.head_ct.scan_checks import (
    DEFAULT_BONE_KERNELS,
    DEFAULT_BONE_WINDOW,
    CheckSettings,
    as_scan_error,
)
from reportsup.cli.common import add_bone_window_options, bone_window_option
from reportsup.contracts.labels.crossdl import LabelSpace
from reportsup.runner.resources import estimate_resources

OUTPUTS = ("checked_manifest.csv", "quarantine.csv", "resources.json")


def check_manifest(
    manifest: pd.DataFrame,
    mask_columns: Sequence[str],
    min_slices: int = 10,
    decode: bool = False,
    known_labels: np.ndarray | None = None,
    progress: bool = True,
    bone_kernel_patterns: Sequence[str] = DEFAULT_BONE_KERNELS,
    bone_window: tuple[float, float] | None = DEFAULT_BONE_WINDOW,
) -> tuple[pd.DataFrame, pd.DataFrame, list[int]]:
    """(usable rows, quarantine table, raw voxel counts of the usable scans).

    ``bone_kernel_patterns`` / ``bone_window``: what counts as a bone-window reconstruction
    (:func:`datamodules.crossdl.head_ct.scan_checks.check_not_bone_window`; ``()`` / None turn a test off).
    A usable series read in another order than its InstanceNumbers is kept and printed (``reordered``
    column of the usable rows: slices moved).
    """
    loader = None
    if decode:
        from datamodules.crossdl.head_ct.transforms import LoadScand

        loader = LoadScand(["image"])
    keep, quarantine, voxels, moved = [], [], [], []
    rows = manifest.to_dict("records")
    for i, row in enumerate(tqdm(rows, desc="checking scans", disable=not progress)):
        problem: tuple[str, str] | None = None
        try:
            info = validate_manifest_row(
                row["image"],
                {column: row.get(column, "") for column in mask_columns},
                min_slices=min_slices,
                bone_kernel_patterns=tuple(bone_kernel_patterns),
                bone_window=bone_window,
                voxels=True,
            )
            if loader is not None:
                try:
                    loader({"image": row["image"]})
                except Exception as err:  # pixels that do not decode: quarantine, do not stop the check
                    raise as_scan_error(err, row["scan_id"], str(row["image"])) from None
        except ScanError as err:
            problem = (err.reason, str(err))
        if problem is None and known_labels is not None and not known_labels[i]:
            problem = ("no_labels", "the report has no Findings section: its labels are unknown")
        if problem is None:
            keep.append(i)
            voxels.append(info.rows * info.columns * info.n_slices)
            moved.append(info.moved_slices)
        else:
            quarantine.append(
                {
                    "scan_id": row["scan_id"],
                    "patient_id": row["patient_id"],
                    "image": row["image"],
                    "reason": problem[0],
                    "message": problem[1],
                }
            )
    checked = manifest.iloc[keep].copy()
    checked[CHECKED_COLUMN] = CHECKED_OK
    checked["reordered"] = moved
    columns = ["scan_id", "patient_id", "image", "reason", "message"]
    return checked, pd.DataFrame(quarantine, columns=columns), voxels


def stand_in_network():
    """The network whose memory is estimated until the DaMIL analyzer is available: MONAI's BasicUNet
    (3D, 1 input channel, 17 + 4 outputs, default features)."""
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=21), "monai BasicUNet (stand-in 3D U-Net)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument(
        "--labels", type=Path, help="labels table joined on report_id (e.g. discretize output)"
    )
    parser.add_argument("--mask-columns", nargs="*", default=None, help="default: every *mask column")
    parser.add_argument("--min-slices", type=int, default=10)
    parser.add_argument("--decode", action="store_true", help="also decode the pixels")
    add_bone_window_options(parser)
    parser.add_argument("--spatial-size", type=int, nargs=3, default=[160, 160, 80])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--cache-in-memory", action="store_true")
    parser.add_argument("--precision", choices=["32", "bf16", "16"], default="32")
    args = parser.parse_args(argv)
    bone_window = bone_window_option(args)
    try:
        CheckSettings(bone_kernel_patterns=tuple(args.bone_kernels), bone_window=bone_window)
    except ValueError as err:
        parser.error(f"--bone-kernels: {err}")
    existing = [args.out_dir / name for name in OUTPUTS if (args.out_dir / name).exists()]
    if existing:
        sys.exit(f"error: {existing[0]} exists; choose a new --out-dir (nothing you made is overwritten).")
    try:
        manifest = read_scan_manifest(args.manifest)
        known = None
        if args.labels:
            known = scan_labels(manifest, LabelSpace(), read_table_file(args.labels), str(args.labels)).known
    except (ReportTableError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    mask_columns = (
        args.mask_columns
        if args.mask_columns is not None
        else [c for c in manifest.columns if str(c).endswith("mask") or "_mask__" in str(c)]
    )
    missing = [c for c in mask_columns if c not in manifest.columns]
    if missing:
        sys.exit(f"error: {args.manifest}: no column(s) {missing}; columns are {list(manifest.columns)}.")
    checked, quarantine, voxels = check_manifest(
        manifest,
        mask_columns,
        args.min_slices,
        args.decode,
        known,
        bone_kernel_patterns=args.bone_kernels,
        bone_window=bone_window,
    )
    model, name = stand_in_network()
    estimate = estimate_resources(
        voxels,
        args.spatial_size,
        len(LabelSpace().types),
        region_mask=any("region_mask" in c for c in mask_columns),
        voxel_mask="voxel_mask" in mask_columns,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        cache_in_memory=args.cache_in_memory,
        model=model,
        bytes_per_value=4 if args.precision == "32" else 2,
        model_name=name,
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    checked.to_csv(args.out_dir / "checked_manifest.csv", index=False)
    quarantine.to_csv(args.out_dir / "quarantine.csv", index=False)
    (args.out_dir / "resources.json").write_text(json.dumps(estimate.as_dict(), indent=2) + "\n")
    print(f"scans: {len(manifest)}, usable: {len(checked)}, quarantined: {len(quarantine)}")
    for reason, n in quarantine["reason"].value_counts().items():
        print(f"  {reason}: {n}")
    for row in quarantine.head(10).itertuples():
        print(f"  - {row.scan_id}: {row.message}")
    reordered = checked.loc[checked["reordered"] > 0]
    if len(reordered):
        print(
            f"{len(reordered)} usable series have InstanceNumbers that disagree with their slice positions; "
            "they are read in slice-position order:"
        )
        for row in reordered.head(10).itertuples():
            print(f"  - {row.scan_id}: {row.reordered} slice(s) moved ({row.image})")
    d = estimate.as_dict()
    print(
        f"estimated cache disk {d['cache_disk_gib']} GiB, host RAM {d['host_ram_gib']} GiB, "
        f"accelerator memory {d.get('accelerator_gib')} GiB ({estimate.accelerator_note})"
    )
    print(f"written: {', '.join(str(args.out_dir / n) for n in OUTPUTS)}")


if __name__ == "__main__":
    main()
