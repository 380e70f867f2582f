"""CQ500 (Chilamkurthy et al. 2018, http://headctstudy.qure.ai/dataset) as an external test set of the
DaMIL analyzer: Liu et al. 2023, Results "The analyzer generalized well on external data" and Figure 6.

**Labels.** ``reads.csv`` has one row per scan (``name``, e.g. ``CQ500-CT-0``; ``Category``) and, per
reader R1-R3, 14 0/1 columns ``R<k>:ICH``, ``R<k>:IPH``, ``R<k>:IVH``, ``R<k>:SDH``, ``R<k>:EDH``,
``R<k>:SAH``, ``R<k>:BleedLocation-Left``, ``R<k>:BleedLocation-Right``, ``R<k>:ChronicBleed``,
``R<k>:Fracture``, ``R<k>:CalvarialFracture``, ``R<k>:OtherFracture``, ``R<k>:MassEffect``,
``R<k>:MidlineShift``. A finding is positive when the majority of the readers (2 of 3) mark it (the
released code's ``vote``). The paper's five labels (Figure 6A):

* intracranial haemorrhage <- ICH ("already defined in CQ500");
* intraparenchymal <- IPH;
* extraparenchymal <- the union of SDH, EDH, SAH and IVH ("determined by the union of subdural,
  epidural, subarachnoid and intraventricular hemorrhages": per finding the majority, then the union);
* left / right <- BleedLocation-Left / -Right.

Midline shift, mass effect and fractures are not used (paper).

**Scores** (Figure 6A: "the maximum predictions of intraparenchymal and extraparenchymal hyperdensity
as the hemorrhage score"), from the finest output scale, per scan (:func:`cq500_scores`):
intraparenchymal = the maximum of the intraparenchymal-hyperdensity map, extraparenchymal = that of the
extraparenchymal-hyperdensity map (both the analyzer's scan-level predictions), intracranial = the
larger of the two, left / right = the maximum over both hyperdensity types and the hemisphere's regions
of ``max_v S_iv D_jv`` (the region-restricted maps of the paper's MIL definition: a voxel shows
abnormality j in region i with probability S_iv D_jv). The paper does not list the hemisphere's regions:
ours are the label space's ``left_*`` / ``right_*`` regions (8 each, lateral ventricles included); the
brain stem is midline and in neither side.

**Series.** Each CQ500 scan folder (``CQ500CT0 CQ500CT0/Unknown Study/<series>/*.dcm``, possibly inside a
``CQ500-CT-0/`` folder from the zip) holds several reconstructions (e.g. ``CT 0.625mm``, ``CT 5mm``,
``CT PLAIN THIN``, ``CT Plain``, ``CT BONE``). The paper does not say which it used; its training scans
were 4-5 mm thick (Table 1: median 4.20 and 4.84 mm) and the released code's CQ500 examples are single
soft-tissue series (``CT 2.55mm``, ``CT Plain``, ``CT Plain 3mm``, ``CT 5mm``, ``CT PRE CONTRAST 5MM
STD``; ``scripts/draw_png.py``). Ours: one series per scan, the usable one (it passes the head-CT header
checks, :func:`~datamodules.crossdl.head_ct.dicom_series.validate_series`: no bone window, at least 10
slices, ...; a description naming BONE is skipped too) whose SliceThickness is closest to
``target_thickness_mm`` (5 mm), ties by description; ``series_pattern`` restricts the candidates by name.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from datamodules.crossdl.head_ct.dicom_series import ScanError, validate_series
from datamodules.crossdl.head_ct.manifest import ManifestError, ScanLabels
from reportsup.contracts.labels.crossdl import TYPES, LabelSpace

log = logging.getLogger(__name__)

READERS = ("R1", "R2", "R3")
#: the 14 findings each reader marked, in reads.csv's order
READ_FINDINGS = (
    "ICH",
    "IPH",
    "IVH",
    "SDH",
    "EDH",
    "SAH",
    "BleedLocation-Left",
    "BleedLocation-Right",
    "ChronicBleed",
    "Fracture",
    "CalvarialFracture",
    "OtherFracture",
    "MassEffect",
    "MidlineShift",
)
#: the findings the paper's five labels are built from
USED_FINDINGS = READ_FINDINGS[:8]
EXTRAPARENCHYMAL_FINDINGS = ("IVH", "SDH", "EDH", "SAH")
#: the paper's five labels (Figure 6A)
CQ500_LABELS = ("intracranial", "intraparenchymal", "extraparenchymal", "left", "right")
#: manifest column of the readers' majority of a finding: ``cq500_majority__<finding>``
MAJORITY_PREFIX = "cq500_majority__"
INTRA_HYPER, EXTRA_HYPER = "intraparenchymal_hyperdensity", "extraparenchymal_hyperdensity"
# Scan-level abnormality types the CQ500 labels define (Table S5 definitions); the two hypodensity types
# have no CQ500 label and stay unknown (NaN), not 0.
CQ500_TO_TYPE = {INTRA_HYPER: ("IPH",), EXTRA_HYPER: EXTRAPARENCHYMAL_FINDINGS}
#: CQ500 scan folder names: ``CQ500CT12 CQ500CT12``, ``CQ500-CT-12``, ``CQ500CT12_CQ500CT12``
SCAN_FOLDER = re.compile(r"^CQ500[-_ ]?CT[-_ ]?(\d+)(?:\D|$)", re.IGNORECASE)
BONE_DESCRIPTION = re.compile(r"bone", re.IGNORECASE)


class CQ500Error(ManifestError):
    """A CQ500 folder or reads.csv that cannot be used; the message names the file, row or folder and the fix."""


# ----------------------------------------------------------------------------------------------------
# reads.csv
# ----------------------------------------------------------------------------------------------------


def scan_number(name: str) -> int | None:
    """The scan number in a CQ500 name or folder name (``CQ500-CT-12`` / ``CQ500CT12 CQ500CT12`` -> 12)."""
    found = SCAN_FOLDER.match(str(name).strip())
    return int(found.group(1)) if found else None


def read_reads(reads_csv: str | Path, findings: Sequence[str] = USED_FINDINGS) -> pd.DataFrame:
    """reads.csv, checked: a ``name`` per row (unique, a CQ500 name), and 0/1 reader columns for ``findings``."""
    path = Path(reads_csv)
    if not path.is_file():
        raise CQ500Error(
            f"{path}: CQ500 reads.csv not found; it comes with the CQ500 download (the readers' labels). "
            "Put it in the CQ500 folder or give its path (data.holdouts.<name>.reads_csv=...)."
        )
    reads = pd.read_csv(path)
    if "name" not in reads.columns:
        raise CQ500Error(
            f"{path}: no 'name' column (found {list(reads.columns)[:6]}); is this CQ500's reads.csv?"
        )
    columns = [f"{r}:{f}" for f in findings for r in READERS]
    missing = [c for c in columns if c not in reads.columns]
    if missing:
        raise CQ500Error(
            f"{path}: missing reader column(s) {missing[:4]}{' ...' if len(missing) > 4 else ''}; CQ500's reads.csv "
            "has R1:<finding>, R2:<finding>, R3:<finding> for ICH, IPH, IVH, SDH, EDH, SAH, "
            "BleedLocation-Left, BleedLocation-Right, ..."
        )
    reads = reads.copy()
    reads["name"] = reads["name"].astype(str).str.strip()
    for i, name in enumerate(reads["name"]):
        if scan_number(name) is None:
            raise CQ500Error(f"{path}: row {i + 2}, name {name!r} is not a CQ500 scan name (CQ500-CT-<n>).")
    dup = reads["name"][reads["name"].duplicated()]
    if len(dup):
        raise CQ500Error(f"{path}: name {dup.iloc[0]!r} appears twice; one row per scan.")
    values = reads[columns].apply(pd.to_numeric, errors="coerce")
    bad = ~values.isin([0, 1])
    if bad.to_numpy().any():
        r, c = np.argwhere(bad.to_numpy())[0]
        raise CQ500Error(
            f"{path}: row {r + 2} ({reads['name'].iat[r]}), column '{columns[c]}' = "
            f"{reads[columns[c]].iat[r]}; reader labels are 0 or 1."
        )
    reads[columns] = values.astype(int)
    return reads


def majority(reads: pd.DataFrame, finding: str) -> pd.Series:
    """1 where at least 2 of the 3 readers marked ``finding`` (the released code's ``vote``)."""
    columns = [f"{r}:{finding}" for r in READERS]
    missing = [c for c in columns if c not in reads.columns]
    if missing:
        raise CQ500Error(f"reads.csv: missing column(s) {missing}; is this the CQ500 reads.csv?")
    return (reads[columns].astype(int).sum(axis=1) >= 2).astype(int)


def majority_table(reads: pd.DataFrame, findings: Sequence[str] = USED_FINDINGS) -> pd.DataFrame:
    """``name`` and ``cq500_majority__<finding>`` (0/1) per scan."""
    out = pd.DataFrame({"name": reads["name"].astype(str)})
    for finding in findings:
        out[f"{MAJORITY_PREFIX}{finding}"] = majority(reads, finding).to_numpy()
    return out


def cq500_scan_labels(reads_csv: str | Path) -> pd.DataFrame:
    """``scan_id`` + ``scan__<type>`` columns (NaN for the types CQ500 does not label)."""
    reads = read_reads(reads_csv, ("IPH", *EXTRAPARENCHYMAL_FINDINGS))
    out = pd.DataFrame({"scan_id": reads["name"].astype(str)})
    for t in TYPES:
        findings = CQ500_TO_TYPE.get(t)
        if findings is None:
            out[f"scan__{t}"] = np.nan
        else:
            out[f"scan__{t}"] = np.max([majority(reads, f) for f in findings], axis=0)
    return out


def cq500_holdout_labels(table: pd.DataFrame, space: LabelSpace, source: str = "CQ500") -> ScanLabels:
    """:class:`ScanLabels` of a CQ500 manifest (its ``cq500_majority__*`` columns): region labels unknown
    (NaN; CQ500 has none), the hyperdensity types' scan labels from :data:`CQ500_TO_TYPE`, NaN for the
    others, no scan unclear, every scan known."""
    missing = [f"{MAJORITY_PREFIX}{f}" for f in USED_FINDINGS if f"{MAJORITY_PREFIX}{f}" not in table.columns]
    if missing:
        raise CQ500Error(
            f"{source}: missing column(s) {missing[:3]}; build the manifest with build_cq500_manifest "
            "(python -m datamodules.crossdl.head_ct.cq500) or give the holdout's reads_csv."
        )
    n = len(table)
    scan = np.full((n, len(space.types)), np.nan, dtype=np.float32)
    for t, findings in CQ500_TO_TYPE.items():
        if t in space.types:
            votes = table[[f"{MAJORITY_PREFIX}{f}" for f in findings]].to_numpy()
            scan[:, space.types.index(t)] = votes.max(axis=1)
    matrix = np.full((n, len(space.regions), len(space.types)), np.nan, dtype=np.float32)
    return ScanLabels(matrix, scan, np.zeros(n, dtype=bool), np.ones(n, dtype=bool))


# ----------------------------------------------------------------------------------------------------
# Labels and scores
# ----------------------------------------------------------------------------------------------------


def cq500_truth(majorities: pd.DataFrame) -> pd.DataFrame:
    """The five labels (0/1, columns :data:`CQ500_LABELS`) from the ``cq500_majority__*`` columns:
    intracranial = ICH, intraparenchymal = IPH, extraparenchymal = the union of the IVH, SDH, EDH and SAH
    majorities, left / right = BleedLocation-Left / -Right (Figure 6A)."""
    missing = [
        f"{MAJORITY_PREFIX}{f}" for f in USED_FINDINGS if f"{MAJORITY_PREFIX}{f}" not in majorities.columns
    ]
    if missing:
        raise CQ500Error(
            f"CQ500 test table: missing column(s) {missing[:3]}; build it with build_cq500_manifest (or give "
            "the hold-out's reads_csv)."
        )
    m = {f: majorities[f"{MAJORITY_PREFIX}{f}"].to_numpy().astype(int) for f in USED_FINDINGS}
    return pd.DataFrame(
        {
            "intracranial": m["ICH"],
            "intraparenchymal": m["IPH"],
            "extraparenchymal": np.max([m[f] for f in EXTRAPARENCHYMAL_FINDINGS], axis=0),
            "left": m["BleedLocation-Left"],
            "right": m["BleedLocation-Right"],
        },
        index=majorities.index,
    )


def hemisphere_regions(space: LabelSpace) -> dict[str, list[str]]:
    """``{"left": left_* regions, "right": right_* regions}`` of the label space (the brain stem, midline,
    in neither)."""
    return {
        side: [r for r in space.anatomical_regions if r.startswith(f"{side}_")] for side in ("left", "right")
    }


def cq500_scores(scan_max: np.ndarray, region_max: np.ndarray, space: LabelSpace) -> pd.DataFrame:
    """The five scores (columns :data:`CQ500_LABELS`) of n scans from ``scan_max`` (n, M: each
    abnormality map's maximum) and ``region_max`` (n, N, M: ``max_v S_iv D_jv`` per anatomical region;
    :func:`lightning_modules.crossdl.damil.pooling.max_mil_pooling`)."""
    for t in (INTRA_HYPER, EXTRA_HYPER):
        if t not in space.types:
            raise ValueError(
                f"CQ500 scoring needs the abnormality type {t!r}; the label space has {space.types}."
            )
    scan_max, region_max = np.asarray(scan_max, dtype=float), np.asarray(region_max, dtype=float)
    n_regions, n_types = len(space.anatomical_regions), len(space.types)
    if region_max.shape[1:] != (n_regions, n_types) or scan_max.shape[1:] != (n_types,):
        raise ValueError(
            f"CQ500 scoring: scan maxima {scan_max.shape} / region maxima {region_max.shape} do not fit the "
            f"label space ({n_regions} regions x {n_types} types)."
        )
    hyper = [space.types.index(INTRA_HYPER), space.types.index(EXTRA_HYPER)]
    sides = {
        side: region_max[:, [space.anatomical_regions.index(r) for r in regions]][:, :, hyper].max(
            axis=(1, 2)
        )
        for side, regions in hemisphere_regions(space).items()
    }
    intra, extra = scan_max[:, hyper[0]], scan_max[:, hyper[1]]
    return pd.DataFrame(
        {
            "intracranial": np.maximum(intra, extra),
            "intraparenchymal": intra,
            "extraparenchymal": extra,
            "left": sides["left"],
            "right": sides["right"],
        }
    )


# ----------------------------------------------------------------------------------------------------
# The CQ500 folder: scans, series, manifest
# ----------------------------------------------------------------------------------------------------


def find_scan_folders(root: str | Path) -> dict[int, Path]:
    """Scan number -> the outermost folder under ``root`` named like a CQ500 scan (its own name may match:
    a root that is one scan's folder). Two different folders of one number are an error."""
    root = Path(root)
    found: dict[int, Path] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        number = scan_number(folder.name)
        if number is not None:
            if number in found and found[number] != folder:
                raise CQ500Error(
                    f"{root}: scan CQ500-CT-{number} has two folders, {found[number]} and {folder}; keep one."
                )
            found[number] = folder
            continue
        stack.extend(
            sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True)
        )
    return found


@dataclass(frozen=True)
class SeriesCandidate:
    """One reconstruction of a scan: its folder, header summary, and why it was not used (None: usable)."""

    folder: Path
    description: str
    n_files: int
    thickness_mm: float | None
    excluded: str | None = None


def series_candidates(scan_folder: str | Path) -> list[SeriesCandidate]:
    """Every folder under ``scan_folder`` that directly holds files, summarised from its first file's header."""
    out = []
    for folder in sorted(p for p in [Path(scan_folder), *Path(scan_folder).rglob("*")] if p.is_dir()):
        files = sorted(
            f
            for f in folder.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.name.upper() != "DICOMDIR"
        )
        if not files:
            continue
        try:
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        except Exception as err:  # not DICOM (a notes file, a zip): reported, not used
            out.append(
                SeriesCandidate(folder, folder.name, len(files), None, f"unreadable ({type(err).__name__})")
            )
            continue
        description = str(ds.get("SeriesDescription", "") or folder.name)
        try:
            thickness = float(ds.get("SliceThickness"))
        except (TypeError, ValueError):
            thickness = None
        excluded = None
        if BONE_DESCRIPTION.search(description) or BONE_DESCRIPTION.search(folder.name):
            excluded = "bone reconstruction (series description)"
        out.append(SeriesCandidate(folder, description, len(files), thickness, excluded))
    return out


def choose_series(
    candidates: Sequence[SeriesCandidate],
    target_thickness_mm: float = 5.0,
    series_pattern: str | None = None,
    min_slices: int = 10,
    validate: bool = True,
) -> tuple[SeriesCandidate | None, list[SeriesCandidate]]:
    """(the chosen series or None, every candidate with the reason it was not chosen). Candidates are
    tried by |SliceThickness - target| (unknown thickness last), then description; the first that
    passes the header checks (``validate``) is chosen."""
    pattern = re.compile(series_pattern, re.IGNORECASE) if series_pattern else None
    report: list[SeriesCandidate] = []
    open_: list[SeriesCandidate] = []
    for c in candidates:
        if (
            c.excluded is None
            and pattern is not None
            and not (pattern.search(c.description) or pattern.search(c.folder.name))
        ):
            c = SeriesCandidate(
                c.folder,
                c.description,
                c.n_files,
                c.thickness_mm,
                f"does not match series_pattern {series_pattern!r}",
            )
        (report if c.excluded else open_).append(c)
    open_.sort(
        key=lambda c: (
            c.thickness_mm is None,
            abs((c.thickness_mm or 0.0) - target_thickness_mm),
            c.description,
            str(c.folder),
        )
    )
    chosen = None
    for c in open_:
        if chosen is not None:
            report.append(
                SeriesCandidate(
                    c.folder,
                    c.description,
                    c.n_files,
                    c.thickness_mm,
                    "another series is closer to the target thickness",
                )
            )
            continue
        if validate:
            try:
                validate_series(c.folder, min_slices=min_slices)
            except ScanError as err:
                report.append(
                    SeriesCandidate(
                        c.folder, c.description, c.n_files, c.thickness_mm, f"{err.reason}: {err}"
                    )
                )
                continue
        elif c.n_files < min_slices:
            report.append(
                SeriesCandidate(
                    c.folder, c.description, c.n_files, c.thickness_mm, f"fewer than {min_slices} slices"
                )
            )
            continue
        chosen = c
    return chosen, report


def build_cq500_manifest(
    root: str | Path,
    reads_csv: str | Path | None = None,
    target_thickness_mm: float = 5.0,
    series_pattern: str | None = None,
    min_slices: int = 10,
    missing: str = "error",
    validate: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest, series report) of a CQ500-layout folder.

    The manifest has ``scan_id`` = ``patient_id`` = ``report_id`` = the reads.csv name (one scan per
    patient), ``image`` (the chosen series folder, :func:`choose_series`), ``series``,
    ``slice_thickness_mm``, ``n_slices``, ``scan_check`` (``ok-v<N>`` when validated, so the head-CT
    DataModule does not read the headers again) and the readers' majorities ``cq500_majority__<finding>``.
    The series report lists every candidate series with ``chosen`` and the reason it was not.

    ``missing="error"`` (default) stops on a reads.csv row without a scan folder, a scan folder without
    a row, or a scan without a usable series; ``"skip"`` leaves them out and lists them in the report
    (``status``) and the log.
    """
    from datamodules.crossdl.head_ct.datamodule import CHECKED_OK  # the DataModule's own mark

    if missing not in ("error", "skip"):
        raise ValueError(f"missing={missing!r}; choose error or skip.")
    root = Path(root)
    if not root.is_dir():
        raise CQ500Error(
            f"{root}: CQ500 folder not found; point cq500_root at the folder holding the CQ500CT* scan folders."
        )
    reads_path = Path(reads_csv) if reads_csv else root / "reads.csv"
    reads = read_reads(reads_path)
    majorities = majority_table(reads)
    folders = find_scan_folders(root)
    if not folders:
        raise CQ500Error(
            f"{root}: no CQ500 scan folder (named like 'CQ500CT0 CQ500CT0' or 'CQ500-CT-0') under it."
        )
    by_number = {scan_number(n): i for i, n in enumerate(reads["name"])}
    problems: list[str] = []
    report_rows: list[dict] = []
    for number, folder in sorted(folders.items()):
        if number not in by_number:
            problems.append(
                f"scan folder {folder} has no row in {reads_path} (expected name CQ500-CT-{number}); add its row or "
                "move the folder out."
            )
            report_rows.append(
                {"scan_id": f"CQ500-CT-{number}", "status": "no reads.csv row", "folder": str(folder)}
            )
    rows = []
    for i, name in enumerate(reads["name"]):
        number = scan_number(name)
        if number not in folders:
            problems.append(
                f"{reads_path}: row {i + 2} ({name}) has no scan folder under {root} (expected e.g. "
                f"'CQ500CT{number} CQ500CT{number}'); download that scan or delete the row."
            )
            report_rows.append({"scan_id": name, "status": "no scan folder"})
            continue
        chosen, others = choose_series(
            series_candidates(folders[number]), target_thickness_mm, series_pattern, min_slices, validate
        )
        for c in others:
            report_rows.append(_report_row(name, c, "not chosen", c.excluded))
        if chosen is None:
            reasons = "; ".join(f"{c.folder.name}: {c.excluded}" for c in others) or "no folder with files"
            problems.append(f"{name} ({folders[number]}): no usable series ({reasons}).")
            report_rows.append(
                {"scan_id": name, "status": "no usable series", "folder": str(folders[number])}
            )
            continue
        report_rows.append(_report_row(name, chosen, "chosen", None))
        rows.append(
            {
                "scan_id": name,
                "patient_id": name,
                "report_id": name,
                "image": str(chosen.folder.resolve()),
                "series": chosen.description,
                "slice_thickness_mm": chosen.thickness_mm,
                "n_slices": chosen.n_files,
                "scan_check": CHECKED_OK if validate else "",
                **majorities.iloc[i].drop("name").to_dict(),
            }
        )
    if problems and missing == "error":
        shown = "\n  ".join(problems[:5])
        more = f"\n  ... ({len(problems)} in all)" if len(problems) > 5 else ""
        raise CQ500Error(
            f"CQ500 folder {root}: {len(problems)} problem(s):\n  {shown}{more}\n"
            "Fix them, or leave those scans out with missing=skip (data.holdouts.<name>.missing=skip)."
        )
    for p in problems:
        log.warning("CQ500: left out: %s", p)
    if not rows:
        raise CQ500Error(f"CQ500 folder {root}: no scan with a reads.csv row and a usable series.")
    return pd.DataFrame(rows), pd.DataFrame(report_rows)


def _report_row(name: str, c: SeriesCandidate, status: str, reason: str | None) -> dict:
    return {
        "scan_id": name,
        "status": status,
        "folder": str(c.folder),
        "series": c.description,
        "slice_thickness_mm": c.thickness_mm,
        "n_files": c.n_files,
        "reason": reason or "",
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m datamodules.crossdl.head_ct.cq500 CQ500_DIR --out manifest.csv``: build (and inspect) the
    manifest a ``damil_cq500`` run would use; register the atlas to it, or give it as the hold-out's
    ``manifest_path`` to skip the series selection on later runs."""
    parser = argparse.ArgumentParser(
        description="CQ500 folder + reads.csv -> head-CT manifest (one series per scan)."
    )
    parser.add_argument("root", help="the CQ500 folder (CQ500CT* scan folders, reads.csv)")
    parser.add_argument("--reads", help="reads.csv (default: ROOT/reads.csv)")
    parser.add_argument(
        "--out", required=True, help="manifest CSV to write; the series report goes beside it"
    )
    parser.add_argument("--target-thickness", type=float, default=5.0, help="preferred slice thickness in mm")
    parser.add_argument("--series-pattern", help="only series whose description or folder matches this regex")
    parser.add_argument(
        "--skip-missing", action="store_true", help="leave out scans with a problem instead of stopping"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest, report = build_cq500_manifest(
            args.root,
            args.reads,
            args.target_thickness,
            args.series_pattern,
            missing="skip" if args.skip_missing else "error",
        )
    except CQ500Error as err:
        raise SystemExit(f"error: {err}") from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(out, index=False)
    report.to_csv(out.with_name(f"{out.stem}_series.csv"), index=False)
    counts = manifest["series"].value_counts().head(8).to_dict()
    print(f"{len(manifest)} scans -> {out}; series chosen: {counts}")


if __name__ == "__main__":
    main()
