"""``reportsup-scan-manifest``: turn a raw DICOM export (any folder layout) into a head-CT scan manifest.

Reads every file's header only (never pixel data), groups images by SeriesInstanceUID and keeps the
series that fit Cross-DL's collection rules (CT, not a scout, axial, at least ``--min-slices`` slices,
a slice thickness in ``--slice-thickness``, no bone kernel or bone window; Liu et al. 2023, Table S3a,
Figure S3), as :mod:`datamodules.crossdl.head_ct.dicom_index` does (issue 21 item 1). Writes:

* ``--out`` (``.csv`` or ``.parquet``): one row per kept series (``scan_id``, ``patient_id``,
  ``study_date``, ``study_datetime``, ``image``, ``accession_number``, ``study_instance_uid``,
  ``series_instance_uid``, ...), a manifest ``reportsup-check-scans`` and ``reportsup-pair-reports`` read
  as it is;
* ``skipped_series.csv`` beside it: every series or group of files left out, with its reason and message;
* ``series/<scan_id>/`` beside it, for each kept series that shares its folder with other files (or spans
  several folders): links to (``--link-mode copy``: copies of) its files, so every ``image`` is a folder
  holding exactly its series.

Nothing existing is overwritten unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from datamodules.crossdl.head_ct.dicom_index import (
    ManifestRules,
    assign_images,
    index_dicom_tree,
    own_folder,
)
from reportsup.cli.common import add_bone_window_options, bone_window_option

PROG = "reportsup-scan-manifest"
SKIPPED_NAME = "skipped_series.csv"
LINK_FOLDER = "series"
# Written into a series/ folder this command created: only such a folder is left out of the walk (a
# user's own "series" folder inside the export is data) and written into.
LINK_MARKER = ".made-by-reportsup-scan-manifest"
SHOW = 10  # skipped rows printed


def build_parser() -> argparse.ArgumentParser:
    defaults = ManifestRules()
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dicom_root", type=Path, help="top folder of the DICOM export (any layout)")
    parser.add_argument("--out", type=Path, required=True, help="manifest to write (.csv or .parquet)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing manifest, skipped_series.csv and link folders",
    )
    parser.add_argument(
        "--link-mode",
        choices=["symlink", "copy"],
        default="symlink",
        help="how a series that shares its folder gets a folder of its own under series/ (default: %(default)s; "
        "copy where symlinks are not allowed, e.g. some Windows or network drives)",
    )
    parser.add_argument("--modality", default=defaults.modality, help="Modality kept (default: %(default)s)")
    parser.add_argument(
        "--min-slices", type=int, default=defaults.min_slices, help="fewest slices (paper: %(default)s)"
    )
    parser.add_argument(
        "--slice-thickness",
        type=float,
        nargs=2,
        default=list(defaults.slice_thickness_mm),
        metavar=("LOW", "HIGH"),
        help="slice thickness range in mm, inclusive (default: %(default)s)",
    )
    parser.add_argument(
        "--max-tilt",
        type=float,
        default=defaults.max_tilt_degrees,
        help="largest angle in degrees between slice normal and head-foot axis of an axial series "
        "(default: %(default)s)",
    )
    add_bone_window_options(parser)
    parser.add_argument(
        "--series-descriptions",
        nargs="*",
        default=[],
        metavar="TEXT",
        help="keep only series with one of these SeriesDescriptions (default: any; Table S3a lists the paper's)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes reading headers (default: %(default)s; e.g. the number of CPU cores for a large export "
        "on a local disk)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _rules(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ManifestRules:
    try:
        return ManifestRules(
            modality=args.modality,
            min_slices=args.min_slices,
            slice_thickness_mm=(args.slice_thickness[0], args.slice_thickness[1]),
            max_tilt_degrees=args.max_tilt,
            bone_kernel_patterns=tuple(args.bone_kernels),
            bone_window=bone_window_option(args),
            series_descriptions=tuple(args.series_descriptions),
        )
    except ValueError as err:
        parser.error(str(err))


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        sys.exit(
            f"{PROG}: {existing[0]} exists; choose another --out, or give --overwrite to replace the manifest, "
            f"{SKIPPED_NAME} and the {LINK_FOLDER}/ link folders it made."
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    rules = _rules(args, parser)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: give 1 or more")
    root: Path = args.dicom_root
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        if root.is_file() and root.suffix.lower() in (".zip", ".tar", ".gz", ".tgz", ".7z", ".iso"):
            what = "is an archive; unpack it first (e.g. `unzip` or `tar -xf`) and give the unpacked folder"
        sys.exit(
            f"{PROG}: {root} {what}. Give the top folder of the DICOM export (e.g. the unpacked PACS export)."
        )
    out: Path = args.out
    if out.suffix.lower() not in (".csv", ".parquet"):
        parser.error(f"--out {out}: give a .csv or .parquet file name")
    if out.is_dir():
        sys.exit(f"{PROG}: --out {out} is a folder; give a file name such as {out / 'manifest.csv'}.")
    folder = out.parent
    skipped_path, link_root = folder / SKIPPED_NAME, folder / LINK_FOLDER
    _refuse_existing([out, skipped_path], args.overwrite)

    start = time.perf_counter()
    # Our own outputs are not part of the export, even when --out lies inside DICOM_ROOT.
    ours = [out, skipped_path] + ([link_root] if (link_root / LINK_MARKER).exists() else [])
    result = index_dicom_tree(root, rules, exclude=ours, progress=not args.no_progress, workers=args.workers)
    seconds = time.perf_counter() - start
    if result.n_files == 0:
        sys.exit(f"{PROG}: {root} holds no files. Give the folder the DICOM export was unpacked into.")

    linked = [
        sid
        for sid, uid in zip(result.kept["scan_id"], result.kept["series_instance_uid"], strict=True)
        if own_folder(result.series[uid]) is None
    ]
    if linked and link_root.exists() and not (link_root / LINK_MARKER).exists():
        sys.exit(
            f"{PROG}: {link_root} exists and was not made by {PROG}; {len(linked)} series need link folders "
            "there. Write the manifest into another folder (--out)."
        )
    targets = [link_root / sid for sid in linked]
    _refuse_existing(targets, args.overwrite)
    for target in targets:  # --overwrite: these are our link folders of an earlier run (named by scan_id)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
    folder.mkdir(parents=True, exist_ok=True)
    if linked:
        link_root.mkdir(exist_ok=True)
        (link_root / LINK_MARKER).write_text(
            f"link folders of {out.name}; see docs/hospital/dicom-manifest.md\n"
        )
    kept = assign_images(result, link_root, args.link_mode)
    if out.suffix.lower() == ".parquet":
        kept.to_parquet(out, index=False)
    else:
        kept.to_csv(out, index=False)
    result.skipped.to_csv(skipped_path, index=False)

    skipped = result.skipped
    rate = result.n_files / seconds if seconds > 0 else float("inf")
    print(
        f"files: {result.n_files} ({rate:.0f} files/s), series kept: {len(kept)} "
        f"({int((kept['image_source'] != 'folder').sum())} through {LINK_FOLDER}/ {args.link_mode} folders), "
        f"skipped rows: {len(skipped)} ({int(skipped['n_files'].sum())} files)"
    )
    for reason, n in skipped["reason"].value_counts().items():
        print(f"  {reason}: {n}")
    for row in skipped.head(SHOW).itertuples():
        print(f"  - {row.message}")
    if len(kept) == 0:
        print(f"no series kept: every reason is in {skipped_path}; check the rules' options (--help).")
    print(
        f"written: {out}, {skipped_path}"
        + (f", {link_root}/" if (kept["image_source"] != "folder").any() else "")
    )


if __name__ == "__main__":
    main()
