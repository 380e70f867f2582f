"""``reportsup-scan-manifest`` throughput: headers read per second on a large export (issue 21 item 1).

Writes ``--series`` CT series of ``--slices`` slices each (``--matrix`` x ``--matrix`` pixels, so files
are as small or as large as you ask), half of them two to a flat folder (the link-folder path), then
times :func:`datamodules.crossdl.head_ct.dicom_index.index_dicom_tree` plus ``assign_images`` over the
tree, best of ``--repeats`` passes (the first pass also pays the cold file cache unless the files were
just written). Prints files/s.

    .venv/bin/python benchmarks/scan_manifest_throughput.py --series 200 --slices 100   # 20,000 files
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _device import header

from datamodules.crossdl.head_ct.dicom_index import assign_images, index_dicom_tree
from datamodules.crossdl.head_ct.dicom_series import write_dicom_series


def write_export(root: Path, n_series: int, n_slices: int, matrix: int) -> int:
    """``n_series`` series under ``root``; odd-numbered ones share a flat folder with the one before."""
    volume = np.full((matrix, matrix, n_slices), 40.0, np.float32)
    for i in range(n_series):
        patient = f"P{i // 2:05d}"
        folder = root / patient / (f"S{i:05d}" if i % 2 == 0 else f"S{i - 1:05d}_b")
        files = write_dicom_series(volume, (0.5, 0.5, 5.0), folder, patient_id=patient, seed_uid=f"bench-{i}")
        if i % 2:
            for f in files:  # two series in one folder
                f.rename(root / patient / f"S{i - 1:05d}" / f"b_{f.name}")
            folder.rmdir()
    return n_series * n_slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--matrix", type=int, default=16, help="rows = columns of each slice")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="worker counts to time, e.g. 1 2 4"
    )
    args = parser.parse_args()
    print(header("cpu", "DICOM headers (no pixel data)", "file system and pydicom only: no GPU used"))
    tmp = Path(tempfile.mkdtemp(prefix="scan_manifest_bench_"))
    try:
        start = time.perf_counter()
        n = write_export(tmp / "export", args.series, args.slices, args.matrix)
        print(f"wrote {n} files in {time.perf_counter() - start:.1f} s")
        for workers in args.workers:
            best = float("inf")
            for r in range(args.repeats):
                links = tmp / f"series_{workers}_{r}"
                start = time.perf_counter()
                result = index_dicom_tree(tmp / "export", progress=False, workers=workers)
                kept = assign_images(result, links)
                best = min(best, time.perf_counter() - start)
                assert len(kept) == args.series and result.skipped.empty
            print(
                f"{n} files, {args.series} series ({args.series // 2} through link folders), {workers} worker(s): "
                f"{best:.1f} s, {n / best:.0f} files/s (best of {args.repeats})"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
