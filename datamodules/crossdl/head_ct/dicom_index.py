"""From a raw DICOM export to a head-CT scan manifest: walk, group by series, keep what the paper kept.

Issue 21 item 1. A PACS export is a folder tree of any layout: several series in one folder, one series
over several folders, several studies per patient, non-image objects (structured reports, presentation
states, DICOMDIR indexes) and files that are not DICOM at all. ``index_dicom_tree`` reads every file's
header only (``pydicom.dcmread(stop_before_pixels=True, specific_tags=HEADER_TAGS)``: pixel data is never
read), groups the images by ``SeriesInstanceUID`` and applies Cross-DL's collection rules to each series
(``ManifestRules``; Liu et al. 2023, Table S3a and STAR Methods "data collection"):

* ``Modality == 'CT'`` (Table S3a, "CT collection");
* not a scout / localizer (``ImageType`` holds LOCALIZER) and axial: the slice normal within
  ``max_tilt_degrees`` of the patient's head-foot axis (the paper stacks axial slices into
  512 x 512 x D volumes, STAR Methods "CT image preprocessing");
* at least ``min_slices`` slices (the paper removed 280 scans with fewer than 10, Figure S3a);
* a slice thickness in ``slice_thickness_mm`` (Table 1: 4.0-4.8 mm IQR retrospective, 4.8-5.0 mm
  prospective; the series descriptions of Table S3a run from 2.4 mm to 6.0 mm, hence 2-6 mm);
* not a bone-window reconstruction (424 scans removed, Figure S3c), decided by the same kernel and
  window evidence as ``reportsup-check-scans`` (``scan_checks.bone_window_evidence``);
* optionally, a ``SeriesDescription`` from a list (Table S3a lists its hospital's 18 descriptions; other
  sites name theirs differently, so the list is empty, i.e. off, by default).

Every file ends in exactly one place: a kept series (one row of ``IndexResult.kept``) or a row of
``IndexResult.skipped`` with a reason from ``SKIP_REASONS`` and a message naming the folder and the fix.
Files that are no series image (not DICOM, unreadable, DICOMDIR, no SeriesInstanceUID) are grouped per
folder and reason, so a folder of 5,000 stray files is one row, not 5,000.

``reportsup-check-scans`` and the DataModule want one folder per series holding only that series' files
(``scan_checks.list_slice_files``). A kept series alone in its folder gets that folder as ``image``; a
series that shares its folder (or spans several) gets a folder of links under ``link_root/<scan_id>/``
(``link_series``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from tqdm import tqdm

from datamodules.crossdl.head_ct.scan_checks import (
    DEFAULT_BONE_KERNELS,
    DEFAULT_BONE_WINDOW,
    TOO_FEW_SLICES_FIX,
    CheckSettings,
    bone_window_evidence,
)

# Only these elements are converted; reading stops before Pixel Data. Rows tells an image from an object
# without pixels (SR, presentation state, key object) whatever its SOP class.
HEADER_TAGS: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "PatientID",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "ImageType",
    "ConvolutionKernel",
    "WindowCenter",
    "WindowWidth",
    "SliceThickness",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "Rows",
    "Columns",
    "NumberOfFrames",
)

#: reason -> what it means (the docs page's table is checked against this mapping by the tests)
SKIP_REASONS: dict[str, str] = {
    "not_dicom": "not a DICOM Part 10 file (no 'DICM' header): documents, thumbnails, viewer files",
    "unreadable": "cannot be read: a DICOM header cut short or corrupt, a broken link, a folder without read permission",
    "dicomdir": "a DICOMDIR index; the files it lists are read directly",
    "no_series_uid": "a DICOM file without SeriesInstanceUID, so it belongs to no series",
    "non_image": "objects without pixels (structured reports, presentation states, key objects, header-only copies)",
    "not_ct": "Modality is not CT (MR, CR, ...) (Table S3a)",
    "localizer": "a scout / localizer (ImageType LOCALIZER)",
    "multi_frame": "an enhanced (multi-frame) series: one file holds all slices",
    "missing_geometry": "no valid ImageOrientationPatient: axial or not cannot be told",
    "not_axial": "slice normal more than max_tilt_degrees from the head-foot axis (sagittal, coronal reformats)",
    "too_few_slices": "fewer than min_slices slices (Figure S3a)",
    "slice_thickness": "slice thickness outside slice_thickness_mm",
    "bone_window": "a bone-kernel or bone-window reconstruction (Figure S3c)",
    "series_description": "SeriesDescription not in the list given (Table S3a)",
    "duplicate_instances": "the same SOPInstanceUID in two files (an export copied twice)",
    "no_patient_id": "PatientID is empty: splits are by patient, so every scan needs one",
}

# Files named so are the export's index, not data (PS3.10 File-set); reported as ``dicomdir``.
_DICOMDIR = re.compile(r"^DICOMDIR(\..*)?$", re.IGNORECASE)


@dataclass(frozen=True)
class ManifestRules:
    """Which series a manifest keeps; the defaults are Cross-DL's rules (see the module docstring).

    ``bone_kernel_patterns`` / ``bone_window`` are ``scan_checks.CheckSettings``'s, so a series this keeps
    is not refused as bone by ``reportsup-check-scans`` with the same options.
    """

    modality: str = "CT"
    min_slices: int = CheckSettings.min_slices
    slice_thickness_mm: tuple[float, float] = (2.0, 6.0)
    max_tilt_degrees: float = 30.0  # gantry tilt of head CT is up to ~30 degrees; reformats are 90
    bone_kernel_patterns: tuple[str, ...] = DEFAULT_BONE_KERNELS
    bone_window: tuple[float, float] | None = DEFAULT_BONE_WINDOW
    series_descriptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        lo, hi = self.slice_thickness_mm
        if not 0 <= lo <= hi:
            raise ValueError(
                f"slice_thickness_mm {self.slice_thickness_mm}: need 0 <= low <= high, e.g. (2, 6)."
            )
        if not 0 <= self.max_tilt_degrees <= 90:
            raise ValueError(f"max_tilt_degrees {self.max_tilt_degrees}: need 0..90.")
        if self.min_slices < 1:
            raise ValueError(f"min_slices {self.min_slices}: need at least 1.")
        # CheckSettings validates the kernel patterns (a bad regular expression is named there).
        self.check_settings()

    def check_settings(self) -> CheckSettings:
        """The ``scan_checks`` settings holding the same bone-window definition."""
        return CheckSettings(
            min_slices=self.min_slices,
            bone_kernel_patterns=tuple(self.bone_kernel_patterns),
            bone_window=self.bone_window,
        )


@dataclass
class SeriesFiles:
    """The image files of one SeriesInstanceUID and their headers (file order: path order)."""

    uid: str
    files: list[tuple[Path, Dataset]] = field(default_factory=list)

    @property
    def first(self) -> Dataset:
        return self.files[0][1]

    @property
    def folders(self) -> list[Path]:
        return sorted({f.parent for f, _ in self.files})


@dataclass
class IndexResult:
    """``kept``: one row per kept series (``MANIFEST_COLUMNS``); ``skipped``: one row per series or file
    group left out (``SKIPPED_COLUMNS``); ``n_files``: entries walked (files, plus broken links and
    folders that could not be listed), each in exactly one row."""

    kept: pd.DataFrame
    skipped: pd.DataFrame
    n_files: int
    series: dict[str, SeriesFiles] = field(repr=False, default_factory=dict)


# ``scan_id, patient_id, image`` are what ``read_scan_manifest`` requires; ``study_datetime`` is what
# ``reportsup-pair-reports`` pairs on by default; accession / study UID join reports by id instead.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "scan_id",
    "patient_id",
    "study_date",
    "study_datetime",
    "image",
    "accession_number",
    "study_instance_uid",
    "series_instance_uid",
    "series_number",
    "series_description",
    "modality",
    "n_slices",
    "slice_thickness",
    "convolution_kernel",
    "image_source",
    "source_folders",
)
SKIPPED_COLUMNS: tuple[str, ...] = (
    "series_instance_uid",
    "patient_id",
    "study_date",
    "study_instance_uid",
    "modality",
    "series_description",
    "n_files",
    "folder",
    "example_file",
    "reason",
    "message",
)


# ----------------------------------------------------------------------------------------------------
# Walking and reading headers
# ----------------------------------------------------------------------------------------------------


def walk_files(root: Path, exclude: Sequence[Path] = ()) -> tuple[list[Path], list[tuple[Path, str, str]]]:
    """Every regular file under ``root`` (links to files and folders followed), sorted, and the entries that could
    not be listed or are no file (``(path, "unreadable", detail)``: a folder without read permission, a
    broken link), so nothing is left out silently. ``exclude``d folders are not entered and ``exclude``d
    files not listed (our own outputs when the manifest is written inside the export)."""
    skip = {os.path.realpath(p) for p in exclude}
    found: list[Path] = []
    problems: list[tuple[Path, str, str]] = []

    def unlisted(err: OSError) -> None:
        path = Path(err.filename or root)
        problems.append(
            (path, "unreadable", f"folder cannot be listed ({type(err).__name__}: {err.strerror})")
        )

    # Linked folders are followed (exports are sometimes assembled from links), each real folder once, so
    # a link back up the tree cannot loop and no file is read twice.
    seen = {os.path.realpath(root)}
    for folder, dirs, files in os.walk(root, onerror=unlisted, followlinks=True):
        kept_dirs = []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(folder, d))
            if real not in skip and real not in seen:
                seen.add(real)
                kept_dirs.append(d)
        dirs[:] = kept_dirs
        for name in files:
            path = os.path.join(folder, name)
            if skip and os.path.realpath(path) in skip:
                continue
            if os.path.isfile(path):
                found.append(Path(path))
            else:
                problems.append((Path(path), "unreadable", "a broken symbolic link or a special file"))
    return sorted(found), problems


def read_header(path: Path) -> Dataset | tuple[str, str]:
    """The file's header (``HEADER_TAGS`` only, no pixels), or ``(reason, detail)`` if it is none."""
    if _DICOMDIR.match(path.name):
        return "dicomdir", "DICOMDIR index file"
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
    except InvalidDicomError:
        return "not_dicom", "no 'DICM' file header"
    except Exception as err:  # any parser failure means a cut or corrupt file: report it, keep walking
        return "unreadable", f"{type(err).__name__}: {err}"
    media = str(getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", ""))
    if media == "1.2.840.10008.1.3.10":  # Media Storage Directory Storage: a DICOMDIR under another name
        return "dicomdir", "DICOMDIR index file"
    if "SOPInstanceUID" not in ds and "SeriesInstanceUID" not in ds:
        # pydicom stops quietly at the end of a cut file; every stored object has a SOPInstanceUID, so a
        # header without it (and without a series) ended early.
        return (
            "unreadable",
            f"the header ends before SOPInstanceUID ({path.stat().st_size} bytes; cut short?)",
        )
    if not str(ds.get("SeriesInstanceUID", "") or "").strip():
        return "no_series_uid", "no SeriesInstanceUID"
    return ds


_CHUNK = 256  # files per task for worker processes: large enough that pickling the task costs little


def _read_chunk(paths: list[Path]) -> list[tuple[Path, Dataset | tuple[str, str]]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [(p, read_header(p)) for p in paths]


def read_headers(
    files: Sequence[Path], workers: int = 1, progress: bool = True
) -> Iterator[tuple[Path, Dataset | tuple[str, str]]]:
    """``(path, read_header(path))`` for every file, in order, with a progress bar; ``workers`` > 1 reads
    in that many processes (parsing headers is CPU-bound Python, so threads would not help)."""
    bar = tqdm(total=len(files), desc="reading DICOM headers", unit="file", disable=not progress)
    with bar:
        if workers <= 1 or len(files) <= _CHUNK:
            for path in files:
                yield path, read_header(path)
                bar.update()
            return
        chunks = [list(files[i : i + _CHUNK]) for i in range(0, len(files), _CHUNK)]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for chunk in pool.map(_read_chunk, chunks):
                yield from chunk
                bar.update(len(chunk))


# ----------------------------------------------------------------------------------------------------
# Rules, each returning (reason, problem, fix) or None
# ----------------------------------------------------------------------------------------------------


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _floats(ds: Dataset, keyword: str, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in ds.get(keyword) or []], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.isfinite(arr).all() else None


def _sop_class_name(ds: Dataset) -> str:
    uid = str(
        ds.get("SOPClassUID", "") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", "")
    )
    return UID(uid).name if uid else "unknown SOP class"


def slice_tilt_degrees(ds: Dataset) -> float | None:
    """Angle in degrees between the slice normal (from ImageOrientationPatient) and the patient's
    head-foot (z) axis; None without a valid orientation."""
    iop = _floats(ds, "ImageOrientationPatient", 6)
    if iop is None:
        return None
    normal = np.cross(iop[:3], iop[3:])
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        return None
    return float(np.degrees(np.arccos(min(1.0, abs(normal[2]) / norm))))


def series_thickness(series: SeriesFiles) -> float | None:
    """Median SliceThickness; without it, the median gap between slice positions along the normal."""
    values = []
    for _, ds in series.files:
        try:
            value = float(ds.get("SliceThickness"))
        except (TypeError, ValueError):
            continue
        if np.isfinite(value) and value > 0:
            values.append(value)
    if values:
        return float(np.median(values))
    iop = _floats(series.first, "ImageOrientationPatient", 6)
    positions = [_floats(ds, "ImagePositionPatient", 3) for _, ds in series.files]
    if iop is None or any(p is None for p in positions) or len(positions) < 2:
        return None
    normal = np.cross(iop[:3], iop[3:])
    gaps = np.diff(np.sort([p @ normal for p in positions]))
    gaps = gaps[gaps > 1e-3]
    return float(np.median(gaps)) if gaps.size else None


def _rule_non_image(series: SeriesFiles, rules: ManifestRules) -> tuple[str, str, str] | None:
    no_pixels = [f for f, ds in series.files if ds.get("Rows") in (None, "")]
    if no_pixels:
        return (
            "non_image",
            f"{_sop_class_name(series.first)} objects without an image ({len(no_pixels)} of {len(series.files)} "
            "files have no Rows: a structured report, presentation state, key object or header-only copy).",
            "nothing to do: such objects are not scans. To use an SR's text, export the report separately.",
        )
    return None


def _rule_modality(series: SeriesFiles, rules: ManifestRules) -> tuple[str, str, str] | None:
    modalities = Counter(_text(ds, "Modality") or "missing" for _, ds in series.files)
    if set(modalities) != {rules.modality}:
        found = ", ".join(f"{m} ({n})" for m, n in modalities.most_common())
        return (
            "not_ct",
            f"Modality is {found}, not {rules.modality}.",
            f"nothing to do if this is not a {rules.modality} scan (Cross-DL kept Modality == 'CT' only, "
            "Table S3a); otherwise fix the export's Modality.",
        )
    return None


def _rule_localizer(series: SeriesFiles, rules: ManifestRules) -> tuple[str, str, str] | None:
    n = sum("LOCALIZER" in _text(ds, "ImageType").upper() for _, ds in series.files)
    if n:
        return (
            "localizer",
            f"a scout / localizer (ImageType {_text(series.first, 'ImageType')!r}; {n} of {len(series.files)} files).",
            "nothing to do: a scout is not a head scan; the study's axial series is listed separately.",
        )
    return None


def _rule_multi_frame(series: SeriesFiles, rules: ManifestRules) -> tuple[str, str, str] | None:
    frames = max(int(ds.get("NumberOfFrames", 1) or 1) for _, ds in series.files)
    if frames > 1:
        return (
            "multi_frame",
            f"an enhanced (multi-frame) series: a file holds {frames} frames; the head-CT reader stacks "
            "one slice per file.",
            "convert it to a NIfTI file (`dcm2niix`) and list that file as the scan's image, or re-export "
            "the series as single-frame (classic) CT images.",
        )
    return None


def _rule_axial(series: SeriesFiles, rules: ManifestRules) -> tuple[str, str, str] | None:
    tilts = [slice_tilt_degrees(ds) for _, ds in series.files]
    missing = sum(t is None for t in tilts)
    if missing:
        return (
            "missing_geometry",
            f"{missing} of {len(tilts)} files have no valid ImageOrientationPatient (secondary capture or "
            "screenshot?), so the slice direction is unknown.",
            "re-export the original axial series from PACS.",
        )
    worst = max(tilts)
    if worst > rules.max_tilt_degrees:
        return (
            "not_axial",
            f"slices are not axial: their normal is {worst:.0f} degrees from the head-foot axis "
            f"(allowed up to {rules.max_tilt_degrees:g}; a sagittal or coronal reformat?).",
            "use the study's axial series; if this is a strongly tilted axial scan, raise --max-tilt.",
        )
    return None


def _rule_slice_count(series: SeriesFiles, rules: ManifestRules) -> tuple[str, str, str] | None:
    n = len(series.files)
    if n < rules.min_slices:
        have = "1 slice" if n == 1 else f"{n} slices"
        return ("too_few_slices", f"only {have} (need at least {rules.min_slices}).", TOO_FEW_SLICES_FIX)
    return None


def _rule_thickness(series: SeriesFiles, rules: ManifestRules) -> tuple[str, str, str] | None:
    lo, hi = rules.slice_thickness_mm
    thickness = series_thickness(series)
    if thickness is None:
        return None  # neither tag nor positions: reportsup-check-scans names the missing geometry
    if not lo <= thickness <= hi:
        return (
            "slice_thickness",
            f"slice thickness {thickness:g} mm is outside {lo:g}-{hi:g} mm.",
            "use the study's 2-6 mm axial reconstruction (Cross-DL's scans were 4-5 mm, Table 1), or widen "
            "--slice-thickness if your protocol differs.",
        )
    return None


def _rule_bone(series: SeriesFiles, rules: ManifestRules) -> tuple[str, str, str] | None:
    settings = rules.check_settings()
    evidence = Counter(e for e in (bone_window_evidence(ds, settings) for _, ds in series.files) if e)
    if evidence:
        found, n = evidence.most_common(1)[0]
        return (
            "bone_window",
            f"bone-window reconstruction: {found} ({n} of {len(series.files)} files).",
            "use the study's soft-tissue (brain) reconstruction: Liu et al. 2023 excluded bone-kernel scans, "
            "too noisy under the brain window (Figure S3c). If this kernel is no bone kernel, change "
            "--bone-kernels / --bone-window.",
        )
    return None


def _rule_description(series: SeriesFiles, rules: ManifestRules) -> tuple[str, str, str] | None:
    if not rules.series_descriptions:
        return None
    description = _text(series.first, "SeriesDescription")
    if description not in rules.series_descriptions:
        return (
            "series_description",
            f"SeriesDescription {description!r} is not one of the {len(rules.series_descriptions)} given.",
            "add it to --series-descriptions if this is a head series you want (Table S3a lists the paper's).",
        )
    return None


def _rule_patient(series: SeriesFiles, rules: ManifestRules) -> tuple[str, str, str] | None:
    if not _text(series.first, "PatientID"):
        return (
            "no_patient_id",
            "PatientID is empty (an anonymisation that removed it?); splits are by patient (DESIGN.md).",
            "re-export with a (pseudonymous) PatientID kept, or add the scan to the manifest by hand.",
        )
    return None


def _rule_duplicates(series: SeriesFiles, rules: ManifestRules) -> tuple[str, str, str] | None:
    seen: dict[str, Path] = {}
    for f, ds in series.files:
        sop = str(ds.get("SOPInstanceUID", ""))
        if sop and sop in seen:
            return (
                "duplicate_instances",
                f"{f} and {seen[sop]} are the same image (SOPInstanceUID {sop}).",
                "delete the second copy of the export (or list one of the folders as DICOM_ROOT).",
            )
        seen[sop] = f
    return None


# Order decides the reason reported when several apply: what the object is first (no image, another
# modality, a scout), then geometry, then the paper's size and reconstruction rules.
RULES = (
    _rule_non_image,
    _rule_modality,
    _rule_localizer,
    _rule_multi_frame,
    _rule_axial,
    _rule_duplicates,
    _rule_slice_count,
    _rule_thickness,
    _rule_bone,
    _rule_description,
    _rule_patient,
)


def series_problem(series: SeriesFiles, rules: ManifestRules) -> tuple[str, str, str] | None:
    """The first rule the series breaks as ``(reason, problem, fix)``, or None if it is kept."""
    for rule in RULES:
        problem = rule(series, rules)
        if problem:
            return problem
    return None


# ----------------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------------


def _n_files(n: int) -> str:
    return "1 file" if n == 1 else f"{n} files"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def make_scan_id(series: SeriesFiles) -> str:
    """``<patient>_<study date>_s<series number>_<8 hex of the SeriesInstanceUID>``: readable, a valid
    folder name, and the same on every run over the same export (reports and splits can refer to it)."""
    ds = series.first
    digest = hashlib.sha1(series.uid.encode()).hexdigest()[:8]
    parts = [_safe(_text(ds, "PatientID") or "nopatient"), _safe(_text(ds, "StudyDate") or "nodate")]
    return "_".join([*parts, f"s{_safe(_text(ds, 'SeriesNumber') or '0')}", digest])


def study_datetime(ds: Dataset) -> str:
    """StudyDate + StudyTime as ISO 8601 (``2023-01-01T12:00:00``), for ``reportsup-pair-reports``; empty
    without a valid StudyDate."""
    date, time = _text(ds, "StudyDate"), _text(ds, "StudyTime")
    if not re.fullmatch(r"\d{8}", date):
        return ""
    digits = re.sub(r"\D", "", time.split(".")[0]).ljust(6, "0")[:6] if time else "000000"
    return f"{date[:4]}-{date[4:6]}-{date[6:]}T{digits[:2]}:{digits[2:4]}:{digits[4:6]}"


def _folder_holds_only(folder: Path, files: set[Path]) -> bool:
    """Whether ``folder`` holds exactly ``files`` as ``scan_checks.list_slice_files`` sees it: its
    non-hidden files other than DICOMDIR, and no sub-folder."""
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            return False
        if entry.name.upper() == "DICOMDIR":
            continue
        if Path(entry.path) not in files:
            return False
    return True


def _skip_row(series: SeriesFiles, reason: str, problem: str, fix: str) -> dict:
    ds = series.first
    folders = series.folders
    where = str(folders[0]) + (f" (and {len(folders) - 1} more folders)" if len(folders) > 1 else "")
    description = _text(ds, "SeriesDescription")
    count = _n_files(len(series.files))
    label = f"series {series.uid}" + (f" ({description!r}, {count})" if description else f" ({count})")
    return {
        "series_instance_uid": series.uid,
        "patient_id": _text(ds, "PatientID"),
        "study_date": _text(ds, "StudyDate"),
        "study_instance_uid": _text(ds, "StudyInstanceUID"),
        "modality": _text(ds, "Modality"),
        "series_description": description,
        "n_files": len(series.files),
        "folder": str(folders[0]),
        "example_file": str(series.files[0][0]),
        "reason": reason,
        "message": f"{where}: {label}: {problem} Fix: {fix}",
    }


_FILE_FIXES = {
    "not_dicom": "nothing to do if these are not images; if they are, re-export them as DICOM Part 10 files.",
    "unreadable": "re-copy or re-export these files from PACS (they may be cut short), or delete them.",
    "dicomdir": "nothing to do: the index is not needed, every file is read directly.",
    "no_series_uid": "re-export these files from PACS; an image without SeriesInstanceUID cannot be grouped.",
}


def _file_group_rows(problems: list[tuple[Path, str, str]]) -> list[dict]:
    """One skipped row per (folder, reason) of files that are no series image."""
    groups: dict[tuple[Path, str], list[tuple[Path, str]]] = defaultdict(list)
    for path, reason, detail in problems:
        groups[(path.parent, reason)].append((path, detail))
    rows = []
    for (folder, reason), items in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        names = ", ".join(p.name for p, _ in items[:3]) + (
            f" and {len(items) - 3} more" if len(items) > 3 else ""
        )
        detail = items[0][1]
        problem = f"{_n_files(len(items))} ({names}): {SKIP_REASONS[reason]}" + (
            f"; first: {detail}." if reason == "unreadable" else "."
        )
        rows.append(
            {
                "series_instance_uid": "",
                "patient_id": "",
                "study_date": "",
                "study_instance_uid": "",
                "modality": "",
                "series_description": "",
                "n_files": len(items),
                "folder": str(folder),
                "example_file": str(items[0][0]),
                "reason": reason,
                "message": f"{folder}: {problem} Fix: {_FILE_FIXES[reason]}",
            }
        )
    return rows


def _kept_row(series: SeriesFiles, scan_id: str) -> dict:
    ds = series.first
    thickness = series_thickness(series)
    return {
        "scan_id": scan_id,
        "patient_id": _text(ds, "PatientID"),
        "study_date": _text(ds, "StudyDate"),
        "study_datetime": study_datetime(ds),
        "image": "",  # filled by assign_images
        "accession_number": _text(ds, "AccessionNumber"),
        "study_instance_uid": _text(ds, "StudyInstanceUID"),
        "series_instance_uid": series.uid,
        "series_number": _text(ds, "SeriesNumber"),
        "series_description": _text(ds, "SeriesDescription"),
        "modality": _text(ds, "Modality"),
        "n_slices": len(series.files),
        # None, not "": the column stays numeric (a Parquet manifest needs one type per column)
        "slice_thickness": None if thickness is None else round(thickness, 4),
        "convolution_kernel": _text(ds, "ConvolutionKernel"),
        "image_source": "",
        "source_folders": ";".join(str(f) for f in series.folders),
    }


# ----------------------------------------------------------------------------------------------------
# The index
# ----------------------------------------------------------------------------------------------------


def index_dicom_tree(
    root: str | Path,
    rules: ManifestRules | None = None,
    *,
    exclude: Sequence[Path] = (),
    progress: bool = True,
    workers: int = 1,
) -> IndexResult:
    """Read every file's header under ``root``, group images by series and apply ``rules``
    (``workers`` processes read the headers; the result is the same for any number).

    Returns kept series (``image`` still empty: ``assign_images`` fills it) and skipped series / file
    groups; every file walked is in exactly one of them.
    """
    rules = rules or ManifestRules()
    root = Path(root)
    files, problems = walk_files(root, exclude)
    n_entries = len(files) + len(problems)  # broken links and unlisted folders are accounted for too
    series: dict[str, SeriesFiles] = {}
    with warnings.catch_warnings():
        # pydicom warns once per malformed value it converts (UIDs with hex digits, odd dates): thousands
        # of lines on a real export, about values no rule needs to be well-formed.
        warnings.simplefilter("ignore", UserWarning)
        for path, header in read_headers(files, workers, progress):
            if isinstance(header, tuple):
                problems.append((path, *header))
                continue
            uid = str(header.SeriesInstanceUID).strip()
            series.setdefault(uid, SeriesFiles(uid)).files.append((path, header))
        kept, skipped = [], _file_group_rows(problems)
        for uid in sorted(series, key=lambda u: (str(series[u].files[0][0]), u)):
            one = series[uid]
            problem = series_problem(one, rules)
            if problem:
                skipped.append(_skip_row(one, *problem))
            else:
                kept.append(_kept_row(one, make_scan_id(one)))
    return IndexResult(
        pd.DataFrame(kept, columns=list(MANIFEST_COLUMNS)),
        pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS)),
        n_entries,
        series,
    )


def link_series(files: Iterable[Path], folder: Path, mode: Literal["symlink", "copy"]) -> None:
    """Fill the new ``folder`` with a link to (or a copy of) each file; names stay the file names, made
    unique by a running prefix when two folders of the series use the same name."""
    files = list(files)
    names = [f.name for f in files]
    unique = len(set(names)) == len(names)
    folder.mkdir(parents=True, exist_ok=False)
    for i, f in enumerate(files):
        target = folder / (f.name if unique else f"{i:05d}_{f.name}")
        if mode == "symlink":
            target.symlink_to(os.path.abspath(f))
        else:
            shutil.copy2(f, target)


def own_folder(series: SeriesFiles) -> Path | None:
    """The series' folder if it holds exactly the series (as ``list_slice_files`` sees it), else None."""
    folders = series.folders
    if len(folders) == 1 and _folder_holds_only(folders[0], {f for f, _ in series.files}):
        return folders[0]
    return None


def assign_images(
    result: IndexResult, link_root: Path, mode: Literal["symlink", "copy"] = "symlink"
) -> pd.DataFrame:
    """Fill ``image`` of every kept row: the series' own folder when it holds exactly the series
    (``image_source = folder``), else a new folder ``link_root/<scan_id>`` of links or copies
    (``image_source = symlink`` / ``copy``). Paths are absolute. Returns the filled table."""
    kept = result.kept.copy()
    for i, row in kept.iterrows():
        one = result.series[row["series_instance_uid"]]
        folder = own_folder(one)
        if folder is not None:
            kept.at[i, "image"] = str(folder.absolute())
            kept.at[i, "image_source"] = "folder"
        else:
            target = link_root / str(row["scan_id"])
            link_series(sorted(f for f, _ in one.files), target, mode)
            kept.at[i, "image"] = str(target.absolute())
            kept.at[i, "image_source"] = mode
    return kept
