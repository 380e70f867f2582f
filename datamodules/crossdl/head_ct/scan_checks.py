"""Header checks for one CT DICOM series folder, each a small named function that raises ``ScanError``.

Cross-DL (Liu et al. 2023, STAR Methods "CT image preprocessing") reads each DICOM series to
Hounsfield units and stacks its slices into a 512 x 512 x D volume; scans with fewer than 10 slices
were removed (STAR Methods, Figure S3a) and only ``Modality == 'CT'`` series were collected
(Table S3a). Here pixels are read with MONAI's ``PydicomReader`` (see ``dicom_series``), whose quirks
decide most checks:

- It stacks slices in ``InstanceNumber`` order, not by ``ImagePositionPatient``, has no option to
  sort by position, and skips a slice without ``InstanceNumber`` with only a warning. We read with
  ``transforms.PositionSortedPydicomReader``, which stacks along the slice normal (as dcm2niix, ITK/GDCM
  and every DICOM viewer do) whatever the InstanceNumbers say; ``instance_order_moves`` counts the
  slices that reading moves, and the move is logged, not refused (issue 21 item 2).
- It applies ``RescaleSlope``/``RescaleIntercept`` itself (float32 output), so values are HU with the
  default arguments; no option or check is needed for that.
- Its slice affine comes from the first and last position only, so a missing slice or a stray
  position silently stretches the volume (``check_slice_spacing``, ``check_no_missing_slices``).
- By default (``fname_regex=""``) it tries every entry in the folder, hidden files included, and
  raises on a sub-folder. ``MONAI_DICOM_READER_ARGS`` restricts it to the files ``list_slice_files``
  keeps; sub-folders are reported by ``list_slice_files``.
- ``LoadImage(reader="PydicomReader")`` is not exclusive: when PydicomReader raises, LoadImage
  silently retries with its default readers (ITKReader can read a DICOM folder, with its own slice
  sorting). Validating first keeps every scan on the PydicomReader path.
- It reads an Enhanced (multi-frame) CT file as one array with an identity affine
  (``check_single_frame``), and a slice cut short fails only when its pixels are decoded
  (``check_pixel_data_complete``, from the pixel data element's length and the file size).

How a folder is checked, in order (``dicom_series.validate_series`` runs exactly this):

1. ``list_slice_files``: the folder exists and directly holds slice files, and no sub-folder.
2. ``read_series``: every slice file parses as DICOM Part 10 (headers only; the pixel data element's
   length and offset are read, its bytes are not).
3. ``SERIES_CHECKS``, in their listed order, on the parsed headers.

Each check raises the first problem it finds as one ``ScanError`` whose message names the folder (and
the file where there is one), the problem and the fix. Later checks may rely on earlier ones having
passed (e.g. slice positions need geometry tags); each docstring says so. Adding or changing a
check changes which scans pass: bump ``dicom_series.VALIDATION_VERSION`` then.

Besides the series checks, the checks of what a scan comes with (issue 21 items 3 and 5), shared by
``reportsup-check-scans``, the DataModule and prediction: ``check_mask_file`` (a mask's shape and voxel
grid against the scan's, ``series_affine``), ``check_voxels_finite`` (NaN / inf voxels, where volumes
are loaded) and ``as_scan_error`` (any failure while loading a scan, as one ScanError naming it).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID

REASONS = frozenset(
    {
        "not_found",
        "no_dicom",
        "unreadable",
        "mixed_series",
        "not_ct",
        "missing_geometry",
        "inconsistent_size",
        "duplicate_slices",
        "missing_slices",
        "inconsistent_spacing",
        "too_few_slices",
        "no_decoder",
        "not_3d",
        # a multi-frame (Enhanced CT) file: one file holds many slices, which PydicomReader does not stack
        "multi_frame",
        # no check raises it since issue 21 (slices are read in position order); kept so that quarantine
        # tables written before still name a known reason
        "instance_order",
        "bone_window",
        # pixel data absent or shorter than Rows x Columns x samples x bytes (a cut copy), found from the
        # header; ``decode_failed``: pixels that do not decode; ``non_finite``: NaN / inf voxels
        "no_pixel_data",
        "truncated",
        "decode_failed",
        "non_finite",
        # mask files of a scan (``check_mask_file``)
        "mask_missing",
        "mask_unreadable",
        "mask_shape",
        "mask_geometry",
    }
)

# Files list_slice_files ignores (hidden files, DICOMDIR), expressed for PydicomReader, which matches
# this regex against "<folder>/<name>" with re.match.
_MONAI_FILE_REGEX = r"(?:.*[/\\])?(?!\.)(?!(?i:DICOMDIR)$)[^/\\]+$"
MONAI_DICOM_READER_ARGS: dict[str, object] = {"fname_regex": _MONAI_FILE_REGEX}

_CODECS_HINT = "or `pip install reportsup[dicom-codecs]`, or `pip install python-gdcm`"
# read_series leaves values longer than this unread (pixel data): only their length and offset are kept.
_DEFER_BYTES = 1024
# Duplicate slices are the same position written twice; DS values carry ~1e-5 mm rounding at most.
_DUPLICATE_MM = 1e-3
# Shared by the DICOM and the NIfTI slice-count checks.
TOO_FEW_SLICES_FIX = (
    "use the full head series: Liu et al. 2023 (Cross-DL) excluded scans with fewer than 10 slices, "
    "which do not cover the brain (Figure S3a)."
)


class ScanError(ValueError):
    """A scan that cannot be used; message names the scan path, the problem and the fix.

    ``reason`` is a short machine-readable code from ``REASONS``.
    """

    def __init__(self, message: str, reason: str = "unreadable", path: str | None = None):
        message = _without_worker_traceback(message)
        if reason not in REASONS:
            raise ValueError(f"unknown ScanError reason {reason!r}; expected one of {sorted(REASONS)}")
        super().__init__(message)
        self.reason = reason
        self.path = path

    def __reduce__(self):
        # Keep reason/path when the error crosses a process boundary (data-loader workers).
        return (type(self), (str(self), self.reason, self.path))


def _without_worker_traceback(message: str) -> str:
    """The ScanError's own message out of the text torch's DataLoader builds when a worker process raised
    it ("Caught ScanError in DataLoader worker process 0. Original Traceback ...: <message>"), which it
    passes to ``ScanError(text)`` in the main process: the user sees the message, not the worker's
    traceback (issue 21 item 3)."""
    if message.startswith(f"Caught {ScanError.__name__} ") and "Original Traceback" in message:
        return message.rstrip().rsplit(f"{ScanError.__name__}: ", 1)[-1]
    return message


def fail(path: Path | str, reason: str, problem: str, fix: str) -> ScanError:
    """The ScanError for ``path``: "<path>: <problem> Fix: <fix>" (returned, for ``raise fail(...)``)."""
    return ScanError(f"{path}: {problem} Fix: {fix}", reason, str(path))


# Reconstruction kernels of bone-window series (case-insensitive ``re.search`` on ConvolutionKernel, its
# values joined by "\\"): GE BONE / BONEPLUS and EDGE; Siemens head kernels 60 and sharper (H60s, H70h,
# Hr60, J70h; the soft-tissue head kernels are H10-H45 / Hr/J up to 49). Other vendors name their sharp
# kernels differently (e.g. Canon FC30, Philips D/E): add yours with ``--bone-kernels``.
DEFAULT_BONE_KERNELS: tuple[str, ...] = (r"BONE", r"EDGE", r"^[HJ]r?[6-9]\d")
# A display window counts as a bone window when WindowCenter >= 250 HU and WindowWidth >= 1400 HU
# (bone presets are about 300-700 / 1500-4000; brain 35-40 / 80-100, subdural 50-100 / 130-300,
# soft tissue 40 / 400).
DEFAULT_BONE_WINDOW: tuple[float, float] = (250.0, 1400.0)


@dataclass(frozen=True)
class CheckSettings:
    """Tunable limits of the checks.

    ``min_slices``: fewest slices a usable scan has (Cross-DL: 10, STAR Methods).
    ``spacing_tolerance``: allowed relative deviation of a slice gap from the median gap.
    ``bone_kernel_patterns``: regular expressions for bone reconstruction kernels (``()``: no kernel
    check). ``bone_window``: (lowest WindowCenter, lowest WindowWidth) of a bone window (None: no
    window check). See ``check_not_bone_window``.
    """

    min_slices: int = 10
    spacing_tolerance: float = 0.1
    bone_kernel_patterns: tuple[str, ...] = DEFAULT_BONE_KERNELS
    bone_window: tuple[float, float] | None = DEFAULT_BONE_WINDOW

    def __post_init__(self) -> None:
        for pattern in self.bone_kernel_patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(
                    f"bone kernel pattern {pattern!r} is not a regular expression ({err}); e.g. '^H[6-9]\\d'."
                ) from None


@dataclass(frozen=True)
class SliceGeometry:
    """Geometry tags of one slice, parsed; only built once ``check_geometry_present`` has passed."""

    path: Path
    header: Dataset
    position: np.ndarray  # ImagePositionPatient, mm (LPS)
    orientation: np.ndarray  # ImageOrientationPatient: row then column direction cosines
    pixel_spacing: np.ndarray  # PixelSpacing: (row spacing, column spacing) mm
    rows: int
    columns: int


@dataclass(frozen=True)
class SliceStack:
    """Slices sorted along the normal of the image plane, with their positions and gaps (mm)."""

    geometry: list[SliceGeometry]  # in position order
    positions: np.ndarray
    gaps: np.ndarray

    @property
    def names(self) -> list[str]:
        return [g.path.name for g in self.geometry]


def _floats(ds: Dataset, keyword: str, n: int) -> np.ndarray | None:
    """Tag value as n finite floats, or None if absent or malformed."""
    value = ds.get(keyword)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.isfinite(arr).all() else None


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _counts(values: list) -> str:
    """'value (n files), ...', most common first."""
    return ", ".join(f"{v} ({_files(n)})" for v, n in Counter(values).most_common())


@dataclass
class SeriesHeaders:
    """The parsed headers of one folder's slice files (sorted by file name), and values derived from them.

    Derived values are computed once, on first use, so checks stay independent functions without
    parsing the same tags twice.
    """

    folder: Path
    slices: list[tuple[Path, Dataset]]

    @cached_property
    def series_uids(self) -> Counter[str]:
        """SeriesInstanceUID -> number of files ("<none>" when absent), in file order."""
        return Counter(str(ds.get("SeriesInstanceUID", "<none>")) for _, ds in self.slices)

    @cached_property
    def transfer_syntaxes(self) -> Counter[UID]:
        """TransferSyntaxUID -> number of files, in file order."""
        return Counter(UID(str(ds.file_meta.get("TransferSyntaxUID", ""))) for _, ds in self.slices)

    @cached_property
    def geometry(self) -> list[SliceGeometry]:
        """Each slice's geometry, in file order; raises ``missing_geometry`` if a slice lacks it."""
        check_geometry_present(self, CheckSettings())
        return [
            SliceGeometry(
                path=f,
                header=ds,
                position=_floats(ds, "ImagePositionPatient", 3),
                orientation=_floats(ds, "ImageOrientationPatient", 6),
                pixel_spacing=_floats(ds, "PixelSpacing", 2),
                rows=int(ds.get("Rows")),
                columns=int(ds.get("Columns")),
            )
            for f, ds in self.slices
        ]

    @cached_property
    def stack(self) -> SliceStack:
        """Slices sorted by position along the first slice's plane normal (works for tilted series too).

        Meaningful once ``check_same_size_and_orientation`` has passed (one normal for all slices).
        """
        geometry = self.geometry
        iop = geometry[0].orientation
        normal = np.cross(iop[:3], iop[3:])
        pos = np.array([g.position @ normal for g in geometry])
        order = np.argsort(pos, kind="stable")
        pos = pos[order]
        return SliceStack([geometry[i] for i in order], pos, np.diff(pos))

    @cached_property
    def median_gap(self) -> float:
        """Median slice gap in mm; for a single slice, its SliceThickness (0 if absent)."""
        gaps = self.stack.gaps
        if gaps.size:
            return float(np.median(gaps))
        return float(self.slices[0][1].get("SliceThickness", 0.0) or 0.0)


Check = Callable[[SeriesHeaders, CheckSettings], None]


# ----------------------------------------------------------------------------------------------------
# Folder level: which files are slices, and can they be parsed
# ----------------------------------------------------------------------------------------------------


def _is_slice_file(p: Path) -> bool:
    """Slice files are the folder's non-hidden files other than DICOMDIR (as MONAI_DICOM_READER_ARGS)."""
    return p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"


def list_slice_files(folder: Path) -> list[Path]:
    """The folder's slice files, sorted by name; raises unless it is a folder holding them and no sub-folder.

    Why: one scan is one folder of one series' slices (DESIGN.md, head-CT manifest). MONAI's
    PydicomReader opens every entry of the folder as a file, so a sub-folder makes it fail mid-run.
    Hidden files and DICOMDIR are skipped here and by ``MONAI_DICOM_READER_ARGS`` alike.
    """
    if not folder.exists():
        raise fail(folder, "not_found", "folder does not exist.", "check the scan path in your table.")
    if not folder.is_dir():
        raise fail(
            folder,
            "not_found",
            "is not a folder.",
            "pass the folder holding the series' DICOM files (or use validate_scan for NIfTI).",
        )
    entries = sorted(folder.iterdir())
    files = [p for p in entries if _is_slice_file(p)]
    subdirs = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]
    if not files:
        found = f" (only sub-folders: {', '.join(subdirs[:5])})" if subdirs else ""
        raise fail(
            folder,
            "no_dicom",
            f"no DICOM files in the folder{found}.",
            "point the scan path at the folder that directly holds one series' slice files.",
        )
    if subdirs:
        raise fail(
            folder,
            "unreadable",
            f"sub-folder(s) {', '.join(subdirs[:5])} next to the slice files; MONAI's PydicomReader opens "
            "every entry of the folder as a file and fails on them.",
            "move the sub-folders out so the folder holds only this series' files.",
        )
    return files


def read_series(folder: Path, files: list[Path]) -> SeriesHeaders:
    """Parse every slice file's header; raises ``unreadable`` naming the first bad file.

    Values over 1 KiB (the pixel data) are deferred: pydicom records their length and file offset and
    does not read them, so ``check_pixel_data_complete`` can compare them with the file size without
    the cost of reading pixels.

    Why: a non-DICOM or truncated file would otherwise crash a data-loader worker mid-run.
    """
    slices: list[tuple[Path, Dataset]] = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, defer_size=_DEFER_BYTES)
        except InvalidDicomError:
            raise fail(
                folder,
                "unreadable",
                f"{f.name} is not a DICOM file (no 'DICM' file header).",
                "remove non-DICOM files from the folder, or re-export the series as DICOM Part 10 files.",
            ) from None
        except Exception as e:  # any parser failure means a corrupt file; report it, don't crash the run
            raise fail(
                folder,
                "unreadable",
                f"{f.name} cannot be parsed ({type(e).__name__}: {e}).",
                "re-export or re-copy the file (it may be truncated), or remove it.",
            ) from None
        slices.append((f, ds))
    return SeriesHeaders(folder, slices)


# ----------------------------------------------------------------------------------------------------
# Header checks, run in SERIES_CHECKS order
# ----------------------------------------------------------------------------------------------------


def check_same_series(series: SeriesHeaders, settings: CheckSettings) -> None:
    """All slices share one SeriesInstanceUID (``mixed_series``).

    Why: Cross-DL stacks the slices of one CT scan into one volume (STAR Methods, "CT image
    preprocessing"); a folder with a scout, a bone-window reconstruction or a second series would
    interleave unrelated images.
    """
    uids = series.series_uids
    if len(uids) > 1:
        listing = "; ".join(f"{uid} ({_files(n)})" for uid, n in uids.most_common())
        raise fail(
            series.folder,
            "mixed_series",
            f"folder holds {len(uids)} series: {listing}.",
            "put each series in its own folder and list the one you want (e.g. the axial head CT).",
        )


def check_modality(series: SeriesHeaders, settings: CheckSettings) -> None:
    """Every slice has Modality CT (``not_ct``).

    Why: Cross-DL collected only ``dicom.Modality == 'CT'`` series (Table S3a) and windows the
    images in Hounsfield units (level 35, width 90; STAR Methods), which only CT pixels are.
    """
    modalities = Counter(str(ds.get("Modality", "")) for _, ds in series.slices)
    if set(modalities) != {"CT"}:
        found = ", ".join(repr(m) if m else "missing" for m in modalities)
        first = next(f.name for f, ds in series.slices if str(ds.get("Modality", "")) != "CT")
        raise fail(
            series.folder,
            "not_ct",
            f"Modality is {found}, not CT (e.g. {first}).",
            "this pipeline expects CT in Hounsfield units; remove the scan or point to its CT series.",
        )


def _first_float(value: object) -> float | None:
    """The first number of a (possibly multi-valued) DS tag such as WindowCenter, or None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def bone_window_evidence(ds: Dataset, settings: CheckSettings) -> str | None:
    """Why this slice header looks like a bone-window reconstruction, or None.

    Evidence is a ConvolutionKernel matching ``settings.bone_kernel_patterns`` or a default display
    window (the first WindowCenter / WindowWidth value) at or above ``settings.bone_window``.
    """
    kernel = ds.get("ConvolutionKernel")
    if kernel is not None and settings.bone_kernel_patterns:
        text = "\\".join(str(k) for k in kernel) if not isinstance(kernel, str) else kernel
        for pattern in settings.bone_kernel_patterns:
            if re.search(pattern, text, flags=re.IGNORECASE):
                return f"ConvolutionKernel {text!r} matches bone-kernel pattern {pattern!r}"
    if settings.bone_window is not None:
        center = _first_float(ds.get("WindowCenter"))
        width = _first_float(ds.get("WindowWidth"))
        lo_center, lo_width = settings.bone_window
        if center is not None and width is not None and center >= lo_center and width >= lo_width:
            return (
                f"window {center:g}/{width:g} (center/width) is a bone window "
                f"(center >= {lo_center:g} and width >= {lo_width:g})"
            )
    return None


def check_not_bone_window(series: SeriesHeaders, settings: CheckSettings) -> None:
    """No slice is a bone-window reconstruction (``bone_window``; names the evidence and the files).

    Why: Cross-DL removed 424 scans "reconstructed for the bone window as such scans have low signal
    to noise ratio (SNR) under soft tissue window" (STAR Methods, data collection; Figure S3c). The
    paper does not say how they were found; here the headers decide: a bone ConvolutionKernel or a
    bone display window (``bone_window_evidence``). A series without either tag passes (NIfTI files
    carry neither and are not checked).
    """
    evidence = Counter()
    for _, ds in series.slices:
        found = bone_window_evidence(ds, settings)
        if found:
            evidence[found] += 1
    if evidence:
        found, n = evidence.most_common(1)[0]
        raise fail(
            series.folder,
            "bone_window",
            f"bone-window reconstruction: {found} ({_files(n)} of {len(series.slices)}).",
            "use the soft-tissue (brain) reconstruction of this study instead: bone-kernel scans are too "
            "noisy under the brain window (Liu et al. 2023 excluded them, Figure S3c). If this kernel is "
            "not a bone kernel, change the patterns (reportsup-check-scans --bone-kernels / --bone-window).",
        )


def check_single_frame(series: SeriesHeaders, settings: CheckSettings) -> None:
    """Every slice file holds one frame (``multi_frame``; names the file and its frame count).

    Why: Cross-DL stacks one image per DICOM file into the volume (STAR Methods, "CT image
    preprocessing"); an Enhanced CT file holds the whole series in one file with per-frame positions in
    functional groups, which MONAI's PydicomReader reads without them (identity affine, frames as a 3-D
    array of unknown orientation). Runs before ``check_geometry_present``, which would otherwise blame
    the missing per-file ImagePositionPatient.
    """
    for f, ds in series.slices:
        frames = ds.get("NumberOfFrames")
        try:
            n = int(frames) if frames not in (None, "") else 1
        except (TypeError, ValueError):
            n = 1
        if n > 1:
            raise fail(
                series.folder,
                "multi_frame",
                f"{f.name} is a multi-frame image ({n} frames in one file, e.g. Enhanced CT); reportsup reads "
                "one slice per file.",
                "convert it to NIfTI with dcm2niix and list the .nii.gz, or export the series from PACS as "
                "single-frame (classic) CT images.",
            )


def _missing_geometry_tags(ds: Dataset) -> list[str]:
    """Names of the geometry tags ``ds`` lacks or has malformed (PixelSpacing must also be > 0)."""
    ps = _floats(ds, "PixelSpacing", 2)
    return [
        name
        for name, ok in (
            ("ImagePositionPatient", _floats(ds, "ImagePositionPatient", 3) is not None),
            ("ImageOrientationPatient", _floats(ds, "ImageOrientationPatient", 6) is not None),
            ("PixelSpacing", ps is not None and (ps > 0).all()),
            ("Rows", ds.get("Rows") is not None),
            ("Columns", ds.get("Columns") is not None),
        )
        if not ok
    ]


def check_geometry_present(series: SeriesHeaders, settings: CheckSettings) -> None:
    """Every slice has valid ImagePositionPatient, ImageOrientationPatient, PixelSpacing (> 0), Rows and
    Columns (``missing_geometry``; names the first file lacking them).

    Why: they order the slices and give the voxel spacing of the stacked volume; secondary captures
    and screenshots lack them.
    """
    for f, ds in series.slices:
        missing = _missing_geometry_tags(ds)
        if missing:
            n_bad = sum(
                _floats(d, "ImagePositionPatient", 3) is None
                or _floats(d, "ImageOrientationPatient", 6) is None
                or _floats(d, "PixelSpacing", 2) is None
                for _, d in series.slices
            )
            raise fail(
                series.folder,
                "missing_geometry",
                f"{f.name} has no valid {', '.join(missing)} ({n_bad} of {len(series.slices)} files lack "
                "geometry).",
                "these tags are needed to order slices and get spacing; re-export the original axial series "
                "from PACS (not a secondary capture or screenshot).",
            )


def check_same_size_and_orientation(series: SeriesHeaders, settings: CheckSettings) -> None:
    """All slices share Rows x Columns, PixelSpacing (rtol 1e-3) and ImageOrientationPatient (atol 1e-3)
    (``inconsistent_size``; lists every one of the three that differs, with file counts).

    Why: Cross-DL stacks slices into one 512 x 512 x D volume (STAR Methods, "CT image
    preprocessing"), which needs one in-plane grid; a scout or a reformat mixed into the folder breaks
    that. Runs after ``check_geometry_present``.
    """
    geometry = series.geometry
    first = geometry[0]
    problems = []
    if len({(g.rows, g.columns) for g in geometry}) > 1:
        problems.append(f"Rows x Columns: {_counts([f'{g.rows}x{g.columns}' for g in geometry])}")
    if any(not np.allclose(g.pixel_spacing, first.pixel_spacing, rtol=1e-3) for g in geometry):
        problems.append(
            f"PixelSpacing: {_counts([str(g.pixel_spacing.round(4).tolist()) for g in geometry])}"
        )
    if any(not np.allclose(g.orientation, first.orientation, atol=1e-3) for g in geometry):
        problems.append(
            f"ImageOrientationPatient: {_counts([str(g.orientation.round(3).tolist()) for g in geometry])}"
        )
    if problems:
        raise fail(
            series.folder,
            "inconsistent_size",
            f"slices differ in {'; '.join(problems)}.",
            "the folder mixes images of different size or orientation (e.g. a scout or a reformat); "
            "keep only the axial series' files.",
        )


def _codec_packages(ts: UID) -> str:
    """pip packages that give pydicom a decoder for transfer syntax ``ts``."""
    name = ts.name.upper()
    if "2000" in name:
        return "`pip install pylibjpeg pylibjpeg-openjpeg` (JPEG 2000)"
    if "JPEG" in name:
        return "`pip install pylibjpeg pylibjpeg-libjpeg` (JPEG / JPEG-LS)"
    return "`pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg`"


def _decoder_problem(ts: UID) -> str | None:
    """Why pixels in transfer syntax ``ts`` cannot be decoded here, or None if they can."""
    from pydicom.pixels.decoders.base import get_decoder

    if not ts.is_transfer_syntax:
        return f"its TransferSyntaxUID {ts} is not a known transfer syntax"
    if not ts.is_compressed:
        return None
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return f"pydicom has no decoder at all for {ts.name} ({ts})"
    if decoder.is_available:
        return None
    return f"pixels are compressed as {ts.name} ({ts}) and no decoder for it is installed"


def check_decodable(series: SeriesHeaders, settings: CheckSettings) -> None:
    """Every slice's TransferSyntaxUID is known and, if compressed, has an installed pydicom decoder
    (``no_decoder``; names the packages to install).

    Why: Cross-DL converts each DICOM slice's pixels to HU before windowing (STAR Methods, "CT image
    preprocessing"); a JPEG / JPEG 2000 series without a decoder would fail only when the data
    loader reads the pixels, mid-run.
    """
    for ts in series.transfer_syntaxes:
        problem = _decoder_problem(ts)
        if problem:
            raise fail(
                series.folder,
                "no_decoder",
                f"{problem}.",
                f"install a decoder: {_codec_packages(ts)}, {_CODECS_HINT}; or decompress the files "
                "(e.g. `gdcmconv --raw`).",
            )


def check_no_duplicate_slices(series: SeriesHeaders, settings: CheckSettings) -> None:
    """No two slices share a position along the slice normal (within 1e-3 mm) (``duplicate_slices``).

    Why: a re-sent copy or a second reconstruction in the folder would be stacked twice. Runs after
    ``check_same_size_and_orientation`` (one slice normal).
    """
    stack = series.stack
    dup = np.flatnonzero(stack.gaps <= _DUPLICATE_MM)
    if dup.size:
        names, pos = stack.names, stack.positions
        pairs = "; ".join(f"{names[i]} and {names[i + 1]} at {pos[i]:.2f} mm" for i in dup[:5])
        raise fail(
            series.folder,
            "duplicate_slices",
            f"{dup.size} pair(s) of slices share a position along the slice normal: {pairs}.",
            "delete the duplicate files (a re-sent copy or a second reconstruction mixed into the folder).",
        )


def check_slice_count(series: SeriesHeaders, settings: CheckSettings) -> None:
    """The series has at least ``settings.min_slices`` slices (``too_few_slices``).

    Why: Cross-DL removed 280 scans with fewer than 10 slices, "too short to cover the full brain"
    (STAR Methods, data collection; Figure S3a). Runs after ``check_no_duplicate_slices`` so that
    duplicates are reported as such.
    """
    n = len(series.slices)
    if n < settings.min_slices:
        raise fail(
            series.folder,
            "too_few_slices",
            f"only {n} slices (need at least {settings.min_slices}).",
            TOO_FEW_SLICES_FIX,
        )


def classify_gaps(
    gaps: np.ndarray, median: float, tolerance: float
) -> tuple[list[tuple[int, int]], list[int]]:
    """Split slice gaps that are off the median by more than ``tolerance`` (relative) into two lists.

    Returns ``(missing, odd)``: ``missing`` holds ``(gap index, number of slices missing)`` for gaps
    close to a whole multiple (>= 2) of the median, ``odd`` the indices of all other off gaps.
    """
    missing, odd = [], []
    for i, gap in enumerate(gaps):
        ratio = gap / median
        if abs(ratio - 1) <= tolerance:
            continue
        n = round(ratio)
        if n >= 2 and abs(ratio - n) <= tolerance:
            missing.append((i, n - 1))
        else:
            odd.append(i)
    return missing, odd


def check_slice_spacing(series: SeriesHeaders, settings: CheckSettings) -> None:
    """Every slice gap is the median gap, or a whole multiple of it (then ``check_no_missing_slices``
    reports it), within ``settings.spacing_tolerance`` (``inconsistent_spacing``).

    Why: MONAI's PydicomReader spaces slices evenly between the first and last position, so a stray
    slice position would silently distort the anatomy. Runs after ``check_no_duplicate_slices``
    (positive gaps).
    """
    stack, median = series.stack, series.median_gap
    _, odd_gaps = classify_gaps(stack.gaps, median, settings.spacing_tolerance)
    if odd_gaps:
        gaps, names = stack.gaps, stack.names
        found = Counter(f"{g:.2f} mm" for g in gaps)
        stray = ", ".join(f"{names[i]}->{names[i + 1]} ({gaps[i]:.2f} mm)" for i in odd_gaps[:5])
        raise fail(
            series.folder,
            "inconsistent_spacing",
            f"slice spacing is not uniform: found {', '.join(f'{s} x{n}' for s, n in found.most_common())} "
            f"(median {median:.2f} mm, tolerance {settings.spacing_tolerance:.0%}); irregular gaps: {stray}.",
            "resample the volume to uniform spacing using each slice's position, or remove the stray slices "
            "(MONAI spaces slices evenly between the first and last one, which would distort this scan).",
        )


def check_no_missing_slices(series: SeriesHeaders, settings: CheckSettings) -> None:
    """No slice gap is a whole multiple (>= 2) of the median gap (``missing_slices``).

    Why: MONAI's PydicomReader would spread the remaining slices evenly and stretch the anatomy.
    Runs after ``check_slice_spacing``, which reports gaps that are no multiple at all.
    """
    stack, median = series.stack, series.median_gap
    missing_gaps, _ = classify_gaps(stack.gaps, median, settings.spacing_tolerance)
    if missing_gaps:
        names, pos = stack.names, stack.positions
        n_missing = sum(n for _, n in missing_gaps)
        where = "; ".join(
            f"{n} between {pos[i]:.2f} and {pos[i + 1]:.2f} mm ({names[i]}, {names[i + 1]})"
            for i, n in missing_gaps[:5]
        )
        raise fail(
            series.folder,
            "missing_slices",
            f"{n_missing} slice(s) missing (spacing {median:.2f} mm): {where}.",
            "re-export the complete series from PACS (MONAI would spread the remaining slices evenly and "
            "stretch the anatomy), or resample to uniform spacing using each slice's position.",
        )


def _pixel_data_extent(ds: Dataset) -> tuple[int, int] | None:
    """(file offset of the pixel data value, its length in bytes) as ``read_series`` parsed it, or None
    when the slice has no (Float/DoubleFloat) Pixel Data element. A value short enough to be read at once
    has no deferred offset: its offset is reported as 0 and its length as the bytes read."""
    for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009):  # PixelData, FloatPixelData, DoubleFloatPixelData
        if tag not in ds._dict:
            continue
        elem = ds._dict[tag]
        tell = getattr(elem, "value_tell", None)
        if tell is not None and getattr(elem, "value", b"") is None:  # deferred: not read
            return int(tell), int(elem.length)
        value = elem.value
        return 0, len(value) if value is not None else 0
    return None


def check_pixel_data_complete(series: SeriesHeaders, settings: CheckSettings) -> None:
    """Every slice has pixel data, as long as its header says and inside the file (``no_pixel_data``,
    ``truncated``; names the file).

    Why: a copy cut short (an interrupted transfer, a full disk) keeps a readable header, so header checks
    alone passed it, and the data loader then failed on the first epoch with a traceback from inside
    pydicom / MONAI (issue 21 item 5). For uncompressed syntaxes the expected length is Rows x Columns x
    SamplesPerPixel x BitsAllocated / 8; for every syntax the value must end inside the file. Runs after
    ``check_geometry_present`` (Rows and Columns present).
    """
    for f, ds in series.slices:
        extent = _pixel_data_extent(ds)
        if extent is None:
            raise fail(
                series.folder,
                "no_pixel_data",
                f"{f.name} has no Pixel Data (e.g. a structured report, presentation state or a header-only "
                "copy).",
                "keep only the series' image files in the folder, or re-export the series with its pixels.",
            )
        tell, length = extent
        # the file pydicom read the header from (``read_series``: ``f``), where a deferred value's offset points
        source = Path(ds.filename) if isinstance(getattr(ds, "filename", None), str) else f
        size = source.stat().st_size
        ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
        defined = length != 0xFFFFFFFF  # encapsulated (compressed) pixel data has undefined length
        short = defined and tell and tell + length > size
        expected = None
        if defined and ts.is_transfer_syntax and not ts.is_compressed:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            bits = int(ds.get("BitsAllocated", 16) or 16)
            spp = int(ds.get("SamplesPerPixel", 1) or 1)
            expected = int(ds.Rows) * int(ds.Columns) * spp * frames * bits // 8
        if short or (expected is not None and length < expected):
            have = max(size - tell, 0) if short else length
            need = expected if expected is not None else length
            raise fail(
                series.folder,
                "truncated",
                f"{f.name} is truncated: its pixel data holds {have} of {need} bytes "
                f"({ds.Rows} x {ds.Columns} pixels; file size {size} bytes).",
                "re-copy or re-export this file from PACS (the copy was cut short), or remove the series.",
            )


def count_moves(numbers: Sequence[object]) -> int:
    """How many slices, listed in position order with their InstanceNumbers (None when absent), sit at
    another place than their InstanceNumber puts them.

    A numbering that runs against the positions (head to feet) moves nothing, so the direction needing
    fewer moves counts. A slice without InstanceNumber counts as moved (MONAI's own reader drops it).
    """
    ranked = sorted(
        range(len(numbers)),
        key=lambda i: (numbers[i] is None, int(numbers[i] or 0), i),  # type: ignore[arg-type]
    )
    up = sum(pos != i for pos, i in enumerate(ranked))
    down = sum(pos != i for pos, i in enumerate(reversed(ranked)))
    return min(up, down)


def instance_order_moves(series: SeriesHeaders) -> int:
    """``count_moves`` of the series: how many slices reading in position order (issue 21 item 2) puts
    elsewhere than their InstanceNumber says. Meaningful after ``check_no_duplicate_slices``."""
    return count_moves([g.header.get("InstanceNumber") for g in series.stack.geometry])


def position_order(headers: Sequence[Dataset]) -> list[int] | None:
    """Indices of ``headers`` sorted by ImagePositionPatient along the slice normal of the first one's
    ImageOrientationPatient (ascending, as ``SeriesHeaders.stack``), or None when a slice lacks valid
    geometry (the header checks refuse such series before any reader sees them).

    Why: dcm2niix, ITK/GDCM and DICOM viewers stack by position; InstanceNumber is only the order the
    scanner sent the images in (issue 21 item 2).
    """
    positions = [_floats(ds, "ImagePositionPatient", 3) for ds in headers]
    orientation = _floats(headers[0], "ImageOrientationPatient", 6) if headers else None
    if orientation is None or any(p is None for p in positions):
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    along = np.array([p @ normal for p in positions])
    return [int(i) for i in np.argsort(along, kind="stable")]


def series_affine(series: SeriesHeaders) -> np.ndarray:
    """Voxel index (column, row, slice) -> RAS mm of the position-sorted series, as NIfTI files written
    from it (dcm2niix, ITK) carry it: directions are ImageOrientationPatient's row and column cosines and
    the slice normal, steps are the column and row spacing and the median gap, the origin is the first
    slice's ImagePositionPatient; LPS is turned into RAS by negating x and y. Meaningful after the
    spacing checks passed."""
    stack = series.stack
    first = stack.geometry[0]
    row_cos, col_cos = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row_cos, col_cos)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * first.pixel_spacing[1]
    lps[:3, 1] = col_cos * first.pixel_spacing[0]
    lps[:3, 2] = normal * series.median_gap
    lps[:3, 3] = first.position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def volume_corners(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World (mm) positions of the 8 corner voxel centres of a volume (8 x 3)."""
    idx = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    return (idx @ np.asarray(affine, dtype=np.float64).T)[:, :3]


def corner_offset(
    shape_a: Sequence[int], affine_a: np.ndarray, shape_b: Sequence[int], affine_b: np.ndarray
) -> float:
    """Largest distance (mm) from a corner voxel of one volume to the nearest corner voxel of the other
    (both ways): 0 for two grids over the same voxels, whatever their axis order or direction."""
    a, b = volume_corners(shape_a, affine_a), volume_corners(shape_b, affine_b)
    dist = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    return float(max(dist.min(axis=1).max(), dist.min(axis=0).max()))


def check_mask_file(path: str, column: str, shape: Sequence[int], affine: np.ndarray | None) -> None:
    """A mask file listed for a scan exists, is a readable NIfTI image of one volume with the scan's voxel
    grid (``mask_missing``, ``mask_unreadable``, ``mask_shape``, ``mask_geometry``).

    ``shape`` is the scan's (columns, rows, slices), ``affine`` its voxel -> RAS mm matrix. The mask may
    store the axes in another order or direction (ITK writes DICOM-derived masks that way; the
    DataModule orients both to RAS), so its shape must be a permutation of the scan's, and its corner
    voxels must lie within half a voxel of the scan's.

    Why: Cross-DL's region masks come from registering the atlas to each scan (STAR Methods, "Atlas-based
    segmentation"); the DataModule resamples image and masks together, so a mask of another scan or
    another grid was resampled silently into wrong labels (issue 21 item 5). ``reportsup-check-scans``,
    the DataModule's setup and prediction run this same check.
    """
    import nibabel as nib

    if not Path(path).is_file():
        raise fail(
            path,
            "mask_missing",
            f"{column} file does not exist.",
            "run reportsup-register-atlas for this scan or fix the path in the manifest.",
        )
    try:
        img = nib.load(path)  # lazy: header and affine only
        mask_shape = tuple(int(s) for s in img.header.get_data_shape())
        mask_affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as err:  # any nibabel failure means the file cannot be used
        raise fail(
            path,
            "mask_unreadable",
            f"{column} file is not a readable NIfTI image ({type(err).__name__}: {err}).",
            "re-create the mask (reportsup-register-atlas), or re-copy it (it may be truncated).",
        ) from None
    extra = int(np.prod(mask_shape[3:])) if len(mask_shape) > 3 else 1
    if len(mask_shape) < 3 or sorted(mask_shape[:3]) != sorted(int(s) for s in shape) or extra != 1:
        raise fail(
            path,
            "mask_shape",
            f"{column} file has shape {mask_shape}, the scan {tuple(int(s) for s in shape)} (columns, rows, "
            "slices): it is not this scan's mask.",
            "re-create the mask on this scan (reportsup-register-atlas), or fix the manifest row.",
        )
    if affine is None:
        return
    offset = corner_offset(mask_shape, mask_affine, shape, affine)
    half_voxel = 0.5 * float(min(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)))
    if not offset <= half_voxel:
        raise fail(
            path,
            "mask_geometry",
            f"{column} file has the scan's size but not its place in space: the volumes' corners are up "
            f"to {offset:.1f} mm apart (tolerance {half_voxel:.2f} mm).",
            "re-create the mask on this scan (reportsup-register-atlas), or fix the manifest row; a mask made "
            "on another reconstruction of the study does not fit.",
        )


def check_voxels_finite(values: np.ndarray | object, path: str | Path, what: str = "image") -> None:
    """Every voxel is a finite number (``non_finite``; counts NaN and infinite voxels).

    Why: one NaN voxel makes the training set's mean and std NaN, and the z-scoring then failed with a
    message blaming "constant training images" (issue 21 item 5); a NaN input is an input error. Run on
    the loaded volume (``transforms.LoadScand``) and, where a NIfTI header cannot rule NaN out, by
    ``dicom_series.validate_nifti(voxels=True)`` (``reportsup-check-scans``).
    """
    import torch

    arr = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if not arr.is_floating_point():
        return
    finite = torch.isfinite(arr)
    if bool(finite.all()):
        return
    n_nan = int(torch.isnan(arr).sum())
    n_inf = int((~finite).sum()) - n_nan
    raise fail(
        path,
        "non_finite",
        f"{what} holds {n_nan} NaN and {n_inf} infinite voxel(s) of {arr.numel()}.",
        "re-convert the scan from its DICOM series (e.g. dcm2niix), or replace the non-finite voxels "
        "(air is -1000 HU) and save it again; NaN voxels would make the training set's intensity "
        "statistics NaN.",
    )


def as_scan_error(err: BaseException, scan_id: object, image: str) -> ScanError:
    """The one message for a failure while loading or preprocessing scan ``scan_id`` (image ``image``).

    A ScanError raised inside a MONAI transform reaches the caller wrapped in MONAI's RuntimeError
    ("applying transform ..."); this finds it in the chain and puts the scan id in front. Any other
    failure (a decoder error, a corrupt gzip stream) becomes ``decode_failed`` naming the innermost
    exception, never a traceback from deep in MONAI (issue 21 items 3 and 5).
    """
    chain, seen = err, set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, ScanError):
            return ScanError(f"scan {scan_id}: {chain}", chain.reason, chain.path)
        if chain.__cause__ is None and chain.__context__ is None:
            break
        chain = chain.__cause__ or chain.__context__
    root = chain if chain is not None else err
    detail = str(root).strip().splitlines()[-1][:300] if str(root).strip() else ""
    return fail(
        image,
        "decode_failed",
        f"scan {scan_id}: the pixel data cannot be read ({type(root).__name__}: {detail}).",
        "run `reportsup-check-scans MANIFEST --decode --out-dir DIR` to find every such scan, then re-export "
        "or re-copy it (it may be truncated), or remove it from the manifest.",
    )


# The header checks validate_series runs, in this order; the first failure is reported. Order
# matters twice: later checks use values that earlier ones vouch for (geometry -> one slice normal ->
# positive gaps), and when a scan has several problems the earlier one is the one reported (e.g.
# duplicates before the slice count). InstanceNumber is not checked: slices are read in position order
# (``instance_order_moves``). Changing this list changes which scans pass: bump
# dicom_series.VALIDATION_VERSION.
SERIES_CHECKS: tuple[Check, ...] = (
    check_same_series,
    check_modality,
    check_not_bone_window,
    check_single_frame,
    check_geometry_present,
    check_same_size_and_orientation,
    check_decodable,
    check_pixel_data_complete,
    check_no_duplicate_slices,
    check_slice_count,
    check_slice_spacing,
    check_no_missing_slices,
)


def run_series_checks(series: SeriesHeaders, settings: CheckSettings) -> None:
    """Run ``SERIES_CHECKS`` in order; raises the first failure as a ScanError."""
    for check in SERIES_CHECKS:
        check(series, settings)
