"""The head-CT scan manifest (DESIGN.md "Data contracts") and its labels.

Manifest columns: ``scan_id``, ``patient_id``, ``image`` (a DICOM series folder or a NIfTI file),
``report_id`` (to join labels) and optionally ``region_mask`` (atlas coarse segmentation, e.g. from
``reportsup-register-atlas``) and ``voxel_mask`` (bit mask of abnormality types). Relative paths are
relative to the manifest's folder. CSV, Parquet and JSONL are read.

Labels (the abnormality matrix A, Liu et al. 2023) come either from a labels table joined on
``report_id`` (the output of ``reportsup-discretize``: pseudo labels, or any table with the same
``<region>__<type>`` columns, e.g. ground truth) or from those columns in the manifest itself.
Scan-level labels are the union over all regions including ``other`` and ``unclear`` (paper:
"calculated using the union (max) of abnormality labels on all regions"); ``unclear`` is positive
if the unclear row has any type. A report without Findings (discretize status ``no_findings``) has
unknown labels: such scans are listed, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.common.tables import ReportTableError, read_table_file
from reportsup.contracts.labels.crossdl import LabelSpace

REQUIRED = ("scan_id", "patient_id", "image")
PATH_COLUMNS = ("image", "region_mask", "voxel_mask")


class ManifestError(ReportTableError):
    """A manifest or labels table that cannot be used; the message names file, row, column and fix."""


def read_scan_manifest(path: str | Path, path_columns: tuple[str, ...] = PATH_COLUMNS) -> pd.DataFrame:
    """Read and check a manifest; path columns (and every ``*mask`` / ``*_mask__*`` column) become absolute paths."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: scan manifest not found.")
    df = read_table_file(path)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {missing}; a scan manifest needs {list(REQUIRED)} "
            f"(found {list(df.columns)})."
        )
    df = df.copy()
    for column in REQUIRED:
        raw = df[column]
        df[column] = raw.astype(str).str.strip()
        # A missing cell is "" in a CSV (read as text) and NaN / None in Parquet and JSONL; the text "nan"
        # or "None" is an id like any other (a scan named "nan" was refused as empty; issue 21 item 3).
        empty = np.flatnonzero(raw.isna().to_numpy() | df[column].eq("").to_numpy())
        if len(empty):
            raise ManifestError(
                f"{path}: row {empty[0] + 1}, column '{column}' is empty; every scan needs it."
            )
    dup = df["scan_id"][df["scan_id"].duplicated()]
    if len(dup):
        rows = np.flatnonzero(df["scan_id"] == dup.iloc[0]) + 1
        raise ManifestError(
            f"{path}: scan_id {dup.iloc[0]!r} appears in rows {rows.tolist()}; scan ids must be unique."
        )
    base = path.parent
    # Mask columns under any name (region_mask__<atlas>, true_region_mask, ...) are paths too.
    for column in [
        c for c in df.columns if c in path_columns or str(c).endswith("mask") or "_mask__" in str(c)
    ]:
        df[column] = [_resolve(base, v) for v in df[column]]
    return df


def _resolve(base: Path, value: object) -> str:
    if (
        value is None
        or (isinstance(value, float) and np.isnan(value))
        or str(value).strip() in ("", "nan", "<NA>")
    ):
        return ""
    p = Path(str(value).strip())
    return str(p if p.is_absolute() else (base / p).resolve())


@dataclass
class ScanLabels:
    """Per scan: A (regions x types, NaN = unknown), scan-level labels, the unclear flag."""

    matrix: np.ndarray  # float32 (n, R, M)
    scan: np.ndarray  # float32 (n, M)
    unclear: np.ndarray  # bool (n,)
    known: np.ndarray  # bool (n,): False = labels unknown (no Findings)


def scan_labels(
    manifest: pd.DataFrame,
    space: LabelSpace,
    labels: pd.DataFrame | None = None,
    source: str = "manifest",
) -> ScanLabels:
    """Join labels to the manifest rows (by ``report_id`` if ``labels`` is given, else the manifest's own columns)."""
    columns = space.matrix_columns()
    if labels is not None:
        if "report_id" not in manifest.columns:
            raise ManifestError(f"{source}: the manifest needs a report_id column to join the labels table.")
        missing_cols = [c for c in ["report_id", *columns] if c not in labels.columns]
        if missing_cols:
            raise ManifestError(
                f"labels table: missing column(s) {missing_cols[:5]}{' ...' if len(missing_cols) > 5 else ''}; "
                "use the output of reportsup-discretize or a table with the same <region>__<type> columns."
            )
        table = labels.drop_duplicates("report_id").set_index(labels["report_id"].astype(str))
        ids = manifest["report_id"].astype(str)
        absent = ids[~ids.isin(table.index)]
        if len(absent):
            raise ManifestError(
                f"labels table: no row for report_id {absent.iloc[0]!r} (manifest row "
                f"{int(absent.index[0]) + 1}; {len(absent)} report(s) missing). Discretize those reports or "
                "remove their scans from the manifest."
            )
        frame = table.loc[ids.to_numpy(), columns]
    else:
        missing_cols = [c for c in columns if c not in manifest.columns]
        if missing_cols:
            raise ManifestError(
                f"{source}: no labels: give data.labels_path (e.g. the reportsup-discretize output) or put the "
                f"<region>__<type> columns in the manifest (missing e.g. {missing_cols[:3]})."
            )
        frame = manifest[columns]
    values = frame.apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & ~frame.isna() & ~frame.astype(str).isin(["", "<NA>", "nan"])
    if bad.to_numpy().any():
        r, c = np.argwhere(bad.to_numpy())[0]
        raise ManifestError(f"{source}: row {r + 1}, column '{columns[c]}' = {frame.iat[r, c]!r} is not 0/1.")
    arr = values.to_numpy(np.float32)
    if np.nanmax(np.where(np.isnan(arr), 0, arr), initial=0) > 1 or np.nanmin(arr, initial=0) < 0:
        raise ManifestError(f"{source}: label values must be 0 or 1.")
    matrix = arr.reshape(len(manifest), len(space.regions), len(space.types))
    known = ~np.isnan(matrix).any(axis=(1, 2))
    scan = np.nanmax(np.where(np.isnan(matrix), 0, matrix), axis=1).astype(np.float32)
    unclear = matrix[:, space.regions.index(space.unclear)].max(axis=1) > 0
    scan[~known] = np.nan
    return ScanLabels(matrix, scan, unclear & known, known)


def positive_rates(matrix: np.ndarray, n_regions: int) -> np.ndarray:
    """f_ij: fraction of (training) scans with type j in anatomical region i (for the DaMIL loss weights)."""
    if len(matrix) == 0:
        raise ValueError("positive rates: no training scans.")
    return np.nanmean(matrix[:, :n_regions], axis=0).astype(np.float32)
