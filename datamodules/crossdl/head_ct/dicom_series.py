"""Write synthetic CT DICOM series and validate scans from their headers before training.

Cross-DL (Liu et al. 2023, head CT) reads each DICOM series to Hounsfield units. ``write_dicom_series``
writes phantoms as conformant CT Image Storage series; ``validate_series`` / ``validate_nifti`` /
``validate_scan`` read headers only and turn every unusable scan into one ``ScanError`` with a fix,
so a bad scan is reported up front instead of crashing a data-loader worker mid-run.

Pixels are read elsewhere with MONAI::

    LoadImage(reader="PydicomReader", image_only=True, **MONAI_DICOM_READER_ARGS)(folder)

What MONAI 1.6.1's ``PydicomReader`` does with a folder, and what ``validate_series`` checks for it:

- It stacks slices in ``InstanceNumber`` order, not by ``ImagePositionPatient``, and has no option to
  sort by position; a slice without ``InstanceNumber`` is skipped with only a warning. Hence the
  ``instance_order`` check: InstanceNumber must be present, unique and monotonic along the slice normal
  (increasing or decreasing both load correctly; the affine then points the right way).
- It applies ``RescaleSlope``/``RescaleIntercept`` itself (float32 output), so values are HU with the
  default arguments; no option is needed for that.
- Its slice affine comes from the first and last position only, so a missing slice or a stray position
  silently stretches the volume: the ``missing_slices`` / ``inconsistent_spacing`` checks.
- By default (``fname_regex=""``) it tries every entry in the folder, hidden files included, and raises
  on a sub-folder. ``MONAI_DICOM_READER_ARGS`` restricts it to the files ``validate_series`` looked at;
  sub-folders are reported by ``validate_series``.
- ``LoadImage(reader="PydicomReader")`` is not exclusive: when PydicomReader raises, LoadImage silently
  retries with its default readers (ITKReader can read a DICOM folder, with its own slice sorting).
  Validating first keeps every scan on the PydicomReader path.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import DSfloat

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
        "instance_order",
    }
)

# Files validate_series ignores (hidden files, DICOMDIR), expressed for PydicomReader, which matches
# this regex against "<folder>/<name>" with re.match.
_MONAI_FILE_REGEX = r"(?:.*[/\\])?(?!\.)(?!(?i:DICOMDIR)$)[^/\\]+$"
MONAI_DICOM_READER_ARGS: dict[str, object] = {"fname_regex": _MONAI_FILE_REGEX}

_CODECS_HINT = "or `pip install reportsup[dicom-codecs]`, or `pip install python-gdcm`"
_TRANSFER_SYNTAXES = {"explicit_little": ExplicitVRLittleEndian, "rle": RLELossless}
# Duplicate slices are the same position written twice; DS values carry ~1e-5 mm rounding at most.
_DUPLICATE_MM = 1e-3


class ScanError(ValueError):
    """A scan that cannot be used; message names the scan path, the problem and the fix.

    ``reason`` is a short machine-readable code from ``REASONS``.
    """

    def __init__(self, message: str, reason: str = "unreadable", path: str | None = None):
        if reason not in REASONS:
            raise ValueError(f"unknown ScanError reason {reason!r}; expected one of {sorted(REASONS)}")
        super().__init__(message)
        self.reason = reason
        self.path = path

    def __reduce__(self):
        # Keep reason/path when the error crosses a process boundary (data-loader workers).
        return (type(self), (str(self), self.reason, self.path))


def _fail(path: Path | str, reason: str, problem: str, fix: str) -> ScanError:
    return ScanError(f"{path}: {problem} Fix: {fix}", reason, str(path))


@dataclass(frozen=True)
class SeriesInfo:
    """Header summary of a usable scan; spacing is (column, row, slice) spacing in mm."""

    path: str
    n_slices: int
    rows: int
    columns: int
    spacing: tuple[float, float, float]
    modality: str
    transfer_syntax: str
    compressed: bool
    series_uid: str


# ----------------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------------


def _ds(value: float) -> DSfloat:
    """A DS value that fits the 16-character limit whatever the float."""
    return DSfloat(float(value), auto_format=True)


def _file_numbers(n: int, shuffle: bool) -> list[int]:
    """File number for each slice; shuffled deterministically so readers cannot rely on names."""
    if not shuffle or n < 2:
        return list(range(n))
    perm = np.random.default_rng(n).permutation(n)
    if np.array_equal(perm, np.arange(n)):
        perm = perm[::-1]
    return [int(p) for p in perm]


def write_dicom_series(
    volume_hu: np.ndarray,
    spacing: tuple[float, float, float],
    folder: str | Path,
    *,
    patient_id: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_description: str = "HEAD 5mm",
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    rescale_intercept: float = -1024.0,
    rescale_slope: float = 1.0,
    modality: str = "CT",
    transfer_syntax: Literal["explicit_little", "rle"] = "explicit_little",
    seed_uid: str | None = None,
    shuffle_files: bool = True,
) -> list[Path]:
    """Write ``volume_hu`` as a CT Image Storage series, one file per slice; returns paths in slice order.

    ``volume_hu[i, j, k]``: i along patient LPS +x (Left), j along +y (Posterior), k along +z (Superior);
    ``spacing`` is (dx, dy, dz) in mm and ``origin`` the LPS position of voxel (0, 0, 0). Slice k is
    ``volume_hu[:, :, k].T`` (rows follow +y, columns +x) at ``origin + k * dz`` along z, InstanceNumber
    k + 1. Stored value = round((HU - intercept) / slope), clipped to int16. With ``shuffle_files`` the
    file names ``IM{n:04d}.dcm`` are a fixed permutation of slice order. UIDs derive from ``seed_uid``
    when given (reproducible files), else are random. ``modality`` other than CT only serves to build
    invalid test series. "rle" uses pydicom's native RLE Lossless encoder (no extra package).
    """
    vol = np.asarray(volume_hu)
    if vol.ndim != 3 or min(vol.shape) < 1:
        raise ValueError(f"volume_hu must be a non-empty 3-D array, got shape {vol.shape}")
    if transfer_syntax not in _TRANSFER_SYNTAXES:
        raise ValueError(
            f"transfer_syntax must be one of {sorted(_TRANSFER_SYNTAXES)}, got {transfer_syntax!r}"
        )
    dx, dy, dz = (float(s) for s in spacing)
    if min(dx, dy, dz) <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    if rescale_slope == 0:
        raise ValueError("rescale_slope must be non-zero")
    syntax = _TRANSFER_SYNTAXES[transfer_syntax]

    def uid(*parts: str) -> UID:
        return generate_uid(entropy_srcs=[seed_uid, *parts]) if seed_uid is not None else generate_uid()

    study_uid = study_uid or uid("study", patient_id)
    series_uid = series_uid or uid("series", study_uid, series_description)
    frame_uid = uid("frame", series_uid)

    stored = np.rint((vol.astype(np.float64) - rescale_intercept) / rescale_slope)
    stored = np.clip(stored, np.iinfo(np.int16).min, np.iinfo(np.int16).max).astype("<i2")

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    nx, ny, nz = vol.shape
    paths = []
    for k, number in enumerate(_file_numbers(nz, shuffle_files)):
        sop_uid = uid("sop", series_uid, str(k))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]

        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        # Patient / study / series / equipment modules; fixed dates keep seeded files byte-identical.
        ds.PatientName = f"SYNTHETIC^{patient_id}"
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20230101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.SeriesDescription = series_description
        ds.PatientPosition = "HFS"
        ds.Manufacturer = "reportsup synthetic"
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        # Image plane / CT image modules.
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(origin[0]), _ds(origin[1]), _ds(origin[2] + k * dz)]
        ds.ImageOrientationPatient = [_ds(v) for v in (1, 0, 0, 0, 1, 0)]
        ds.PixelSpacing = [_ds(dy), _ds(dx)]  # DICOM order: row spacing (along y), column spacing (x)
        ds.SliceThickness = _ds(dz)
        ds.SliceLocation = _ds(origin[2] + k * dz)
        ds.KVP = ""
        ds.RescaleIntercept = _ds(rescale_intercept)
        ds.RescaleSlope = _ds(rescale_slope)
        ds.RescaleType = "HU"
        ds.WindowCenter = _ds(35)
        ds.WindowWidth = _ds(90)
        # Image pixel module.
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ny
        ds.Columns = nx
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1

        pixels = np.ascontiguousarray(stored[:, :, k].T)
        if syntax == RLELossless:
            # Keep our (seeded) SOPInstanceUID: compress() would otherwise generate a new one.
            ds.compress(RLELossless, pixels, generate_instance_uid=False)
        else:
            ds.PixelData = pixels.tobytes()
        path = out / f"IM{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------


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


def _floats(ds: Dataset, keyword: str, n: int) -> np.ndarray | None:
    """Tag value as n floats, or None if absent or malformed."""
    value = ds.get(keyword)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.isfinite(arr).all() else None


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _counts(values: list) -> str:
    return ", ".join(f"{v} ({_files(n)})" for v, n in Counter(values).most_common())


def validate_series(
    folder: str | Path, *, min_slices: int = 10, spacing_tolerance: float = 0.1
) -> SeriesInfo:
    """Check one CT series folder from its headers only; raise ScanError with a fix, else summarize it.

    Every non-hidden file other than DICOMDIR must be a DICOM Part 10 file of the same series.
    ``spacing_tolerance`` is the allowed relative deviation of a slice gap from the median gap.
    """
    root = Path(folder)
    if not root.exists():
        raise _fail(root, "not_found", "folder does not exist.", "check the scan path in your table.")
    if not root.is_dir():
        raise _fail(
            root,
            "not_found",
            "is not a folder.",
            "pass the folder holding the series' DICOM files (or use validate_scan for NIfTI).",
        )
    entries = sorted(root.iterdir())
    files = [
        p for p in entries if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
    ]
    if not files:
        subdirs = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]
        found = f" (only sub-folders: {', '.join(subdirs[:5])})" if subdirs else ""
        raise _fail(
            root,
            "no_dicom",
            f"no DICOM files in the folder{found}.",
            "point the scan path at the folder that directly holds one series' slice files.",
        )
    subdirs = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]
    if subdirs:
        raise _fail(
            root,
            "unreadable",
            f"sub-folder(s) {', '.join(subdirs[:5])} next to the slice files; MONAI's PydicomReader opens "
            "every entry of the folder as a file and fails on them.",
            "move the sub-folders out so the folder holds only this series' files.",
        )

    headers: list[tuple[Path, Dataset]] = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except InvalidDicomError:
            raise _fail(
                root,
                "unreadable",
                f"{f.name} is not a DICOM file (no 'DICM' file header).",
                "remove non-DICOM files from the folder, or re-export the series as DICOM Part 10 files.",
            ) from None
        except Exception as e:  # any parser failure means a corrupt file; report it, don't crash the run
            raise _fail(
                root,
                "unreadable",
                f"{f.name} cannot be parsed ({type(e).__name__}: {e}).",
                "re-export or re-copy the file (it may be truncated), or remove it.",
            ) from None
        headers.append((f, ds))

    series = Counter(str(ds.get("SeriesInstanceUID", "<none>")) for _, ds in headers)
    if len(series) > 1:
        listing = "; ".join(f"{uid} ({_files(n)})" for uid, n in series.most_common())
        raise _fail(
            root,
            "mixed_series",
            f"folder holds {len(series)} series: {listing}.",
            "put each series in its own folder and list the one you want (e.g. the axial head CT).",
        )
    series_uid = next(iter(series))

    modalities = Counter(str(ds.get("Modality", "")) for _, ds in headers)
    if set(modalities) != {"CT"}:
        found = ", ".join(repr(m) if m else "missing" for m in modalities)
        raise _fail(
            root,
            "not_ct",
            f"Modality is {found}, not CT.",
            "this pipeline expects CT in Hounsfield units; remove the scan or point to its CT series.",
        )

    geometry = []
    for f, ds in headers:
        ipp = _floats(ds, "ImagePositionPatient", 3)
        iop = _floats(ds, "ImageOrientationPatient", 6)
        ps = _floats(ds, "PixelSpacing", 2)
        rows, cols = ds.get("Rows"), ds.get("Columns")
        missing = [
            name
            for name, ok in (
                ("ImagePositionPatient", ipp is not None),
                ("ImageOrientationPatient", iop is not None),
                ("PixelSpacing", ps is not None and (ps > 0).all()),
                ("Rows", rows is not None),
                ("Columns", cols is not None),
            )
            if not ok
        ]
        if missing:
            n_bad = sum(
                _floats(d, "ImagePositionPatient", 3) is None
                or _floats(d, "ImageOrientationPatient", 6) is None
                or _floats(d, "PixelSpacing", 2) is None
                for _, d in headers
            )
            raise _fail(
                root,
                "missing_geometry",
                f"{f.name} has no valid {', '.join(missing)} ({n_bad} of {len(headers)} files lack geometry).",
                "these tags are needed to order slices and get spacing; re-export the original axial series "
                "from PACS (not a secondary capture or screenshot).",
            )
        geometry.append((f, ds, ipp, iop, ps, int(rows), int(cols)))

    _, _, _, iop0, ps0, rows0, cols0 = geometry[0]
    size_problems = []
    if len({(r, c) for *_, r, c in geometry}) > 1:
        size_problems.append(f"Rows x Columns: {_counts([f'{r}x{c}' for *_, r, c in geometry])}")
    if any(not np.allclose(g[4], ps0, rtol=1e-3) for g in geometry):
        size_problems.append(f"PixelSpacing: {_counts([str(g[4].round(4).tolist()) for g in geometry])}")
    if any(not np.allclose(g[3], iop0, atol=1e-3) for g in geometry):
        size_problems.append(
            f"ImageOrientationPatient: {_counts([str(g[3].round(3).tolist()) for g in geometry])}"
        )
    if size_problems:
        raise _fail(
            root,
            "inconsistent_size",
            f"slices differ in {'; '.join(size_problems)}.",
            "the folder mixes images of different size or orientation (e.g. a scout or a reformat); "
            "keep only the axial series' files.",
        )

    syntaxes = Counter(UID(str(ds.file_meta.get("TransferSyntaxUID", ""))) for _, ds in headers)
    for ts in syntaxes:
        problem = _decoder_problem(ts)
        if problem:
            raise _fail(
                root,
                "no_decoder",
                f"{problem}.",
                f"install a decoder: {_codec_packages(ts)}, {_CODECS_HINT}; or decompress the files "
                "(e.g. `gdcmconv --raw`).",
            )

    # Order slices along the normal of the image plane (works for tilted or non-axial series too).
    normal = np.cross(iop0[:3], iop0[3:])
    pos = np.array([g[2] @ normal for g in geometry])
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    names = [geometry[i][0].name for i in order]
    gaps = np.diff(pos)

    dup = np.flatnonzero(gaps <= _DUPLICATE_MM)
    if dup.size:
        pairs = "; ".join(f"{names[i]} and {names[i + 1]} at {pos[i]:.2f} mm" for i in dup[:5])
        raise _fail(
            root,
            "duplicate_slices",
            f"{dup.size} pair(s) of slices share a position along the slice normal: {pairs}.",
            "delete the duplicate files (a re-sent copy or a second reconstruction mixed into the folder).",
        )

    if len(headers) < min_slices:
        raise _fail(
            root,
            "too_few_slices",
            f"only {len(headers)} slices (need at least {min_slices}).",
            "use the full head series: Liu et al. 2023 (Cross-DL) excluded scans with fewer than 10 slices, "
            "which do not cover the brain (Figure S3a).",
        )

    median = float(np.median(gaps)) if gaps.size else float(headers[0][1].get("SliceThickness", 0.0) or 0.0)
    missing_gaps, odd_gaps = [], []
    for i, gap in enumerate(gaps):
        ratio = gap / median
        if abs(ratio - 1) <= spacing_tolerance:
            continue
        n = round(ratio)
        if n >= 2 and abs(ratio - n) <= spacing_tolerance:
            missing_gaps.append((i, n - 1))
        else:
            odd_gaps.append(i)
    if odd_gaps:
        found = Counter(f"{g:.2f} mm" for g in gaps)
        stray = ", ".join(f"{names[i]}->{names[i + 1]} ({gaps[i]:.2f} mm)" for i in odd_gaps[:5])
        raise _fail(
            root,
            "inconsistent_spacing",
            f"slice spacing is not uniform: found {', '.join(f'{s} x{n}' for s, n in found.most_common())} "
            f"(median {median:.2f} mm, tolerance {spacing_tolerance:.0%}); irregular gaps: {stray}.",
            "resample the volume to uniform spacing using each slice's position, or remove the stray slices "
            "(MONAI spaces slices evenly between the first and last one, which would distort this scan).",
        )
    if missing_gaps:
        n_missing = sum(n for _, n in missing_gaps)
        where = "; ".join(
            f"{n} between {pos[i]:.2f} and {pos[i + 1]:.2f} mm ({names[i]}, {names[i + 1]})"
            for i, n in missing_gaps[:5]
        )
        raise _fail(
            root,
            "missing_slices",
            f"{n_missing} slice(s) missing (spacing {median:.2f} mm): {where}.",
            "re-export the complete series from PACS (MONAI would spread the remaining slices evenly and "
            "stretch the anatomy), or resample to uniform spacing using each slice's position.",
        )

    numbers = [geometry[i][1].get("InstanceNumber") for i in order]
    if any(n is None for n in numbers):
        n_none = sum(n is None for n in numbers)
        raise _fail(
            root,
            "instance_order",
            f"{n_none} slice(s) have no InstanceNumber; MONAI's PydicomReader silently drops them.",
            "set InstanceNumber in slice-position order (e.g. with pydicom), or convert to NIfTI with dcm2niix.",
        )
    steps = np.diff(np.asarray([int(n) for n in numbers]))
    if steps.size and not ((steps > 0).all() or (steps < 0).all()):
        i = int(np.flatnonzero(steps * np.sign(np.median(steps) or 1) <= 0)[0])
        raise _fail(
            root,
            "instance_order",
            f"InstanceNumber does not follow slice position ({names[i]} at {pos[i]:.2f} mm is "
            f"#{numbers[i]}, {names[i + 1]} at {pos[i + 1]:.2f} mm is #{numbers[i + 1]}); MONAI's "
            "PydicomReader stacks slices by InstanceNumber and would scramble them.",
            "renumber InstanceNumber in slice-position order (e.g. with pydicom), or convert to NIfTI with "
            "dcm2niix, which sorts by position.",
        )

    first_ts = next(iter(syntaxes))
    return SeriesInfo(
        path=str(root),
        n_slices=len(headers),
        rows=rows0,
        columns=cols0,
        spacing=(float(ps0[1]), float(ps0[0]), median),
        modality="CT",
        transfer_syntax=str(first_ts),
        compressed=any(ts.is_compressed for ts in syntaxes),
        series_uid=series_uid,
    )


def validate_nifti(path: str | Path, *, min_slices: int = 10) -> SeriesInfo:
    """Check a .nii/.nii.gz scan from its header only; slices run along the third axis."""
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise _fail(p, "not_found", "file does not exist.", "check the scan path in your table.")
    try:
        img = nib.load(p)  # lazy: reads the header, not the voxels
        shape = tuple(int(s) for s in img.shape)
        zooms = tuple(float(z) for z in img.header.get_zooms())
    except Exception as e:  # a corrupt file must not stop the run
        raise _fail(
            p,
            "unreadable",
            f"cannot read the NIfTI header ({type(e).__name__}: {e}).",
            "re-convert the scan (e.g. with dcm2niix) or re-copy it (it may be truncated).",
        ) from None
    if len(shape) < 3 or any(s > 1 for s in shape[3:]):
        raise _fail(
            p,
            "not_3d",
            f"image has shape {shape}; expected one 3-D volume.",
            "split the time series / multi-volume file and list one 3-D volume per scan "
            "(e.g. `fslsplit` or nibabel's `four_to_three`).",
        )
    if shape[2] < min_slices:
        raise _fail(
            p,
            "too_few_slices",
            f"only {shape[2]} slices along the third axis (need at least {min_slices}).",
            "use the full head series: Liu et al. 2023 (Cross-DL) excluded scans with fewer than 10 slices, "
            "which do not cover the brain (Figure S3a).",
        )
    gz = p.name.lower().endswith(".gz")
    return SeriesInfo(
        path=str(p),
        n_slices=shape[2],
        rows=shape[1],
        columns=shape[0],
        spacing=(zooms[0], zooms[1], zooms[2]),
        modality="unknown",  # NIfTI carries no modality
        transfer_syntax="nifti-gz" if gz else "nifti",
        compressed=gz,
        series_uid="",
    )


# Bump when a check is added or changed: records of scans that passed older checks
# (HeadCTDataModule's validated-scans file in its cache folder) are then not trusted, and every scan
# is validated again.
VALIDATION_VERSION = 1


def validate_scan(path: str | Path, **kw) -> SeriesInfo:
    """Validate a DICOM series folder or a .nii/.nii.gz file; ``kw`` go to the matching validator."""
    p = Path(path)
    if p.is_dir():
        return validate_series(p, **kw)
    if re.search(r"\.nii(\.gz)?$", p.name, flags=re.IGNORECASE):
        kw.pop("spacing_tolerance", None)  # NIfTI carries one spacing per axis; nothing to compare
        return validate_nifti(p, **kw)
    if not p.exists():
        raise _fail(p, "not_found", "path does not exist.", "check the scan path in your table.")
    raise _fail(
        p,
        "unreadable",
        "unsupported scan format.",
        "supported formats are a folder holding one DICOM series, or a .nii / .nii.gz file; convert the scan "
        "(e.g. with dcm2niix) or point at the series folder.",
    )
