"""Write synthetic CT DICOM series and validate scans from their headers before training.

Cross-DL (Liu et al. 2023, head CT) reads each DICOM series to Hounsfield units. ``write_dicom_series``
writes phantoms as conformant CT Image Storage series; ``validate_series`` / ``validate_nifti`` /
``validate_scan`` read headers only and turn every unusable scan into one ``ScanError`` with a fix,
so a bad scan is reported up front instead of crashing a data-loader worker mid-run.

Pixels are read elsewhere with MONAI::

    LoadImage(reader="PydicomReader", image_only=True, **MONAI_DICOM_READER_ARGS)(folder)

What MONAI 1.6.1's ``PydicomReader`` does with a folder, and which check guards against each
quirk, is described in ``scan_checks``, which holds the checks as small named functions run in the
order of ``scan_checks.SERIES_CHECKS``. ``ScanError``, ``REASONS`` and ``MONAI_DICOM_READER_ARGS`` live
there and are re-exported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from datamodules.crossdl.head_ct.scan_checks import (
    DEFAULT_BONE_KERNELS,
    DEFAULT_BONE_WINDOW,
    MONAI_DICOM_READER_ARGS,
    REASONS,
    TOO_FEW_SLICES_FIX,
    CheckSettings,
    ScanError,
    fail,
    list_slice_files,
    read_series,
    run_series_checks,
)

__all__ = [
    "MONAI_DICOM_READER_ARGS",
    "REASONS",
    "VALIDATION_VERSION",
    "ScanError",
    "SeriesInfo",
    "validate_nifti",
    "validate_scan",
    "validate_series",
    "write_dicom_series",
]

_TRANSFER_SYNTAXES = {"explicit_little": ExplicitVRLittleEndian, "rle": RLELossless}


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


def validate_series(
    folder: str | Path,
    *,
    min_slices: int = 10,
    spacing_tolerance: float = 0.1,
    bone_kernel_patterns: tuple[str, ...] = DEFAULT_BONE_KERNELS,
    bone_window: tuple[float, float] | None = DEFAULT_BONE_WINDOW,
) -> SeriesInfo:
    """Check one CT series folder from its headers only; raise ScanError with a fix, else summarize it.

    Every non-hidden file other than DICOMDIR must be a DICOM Part 10 file of the same series.
    ``spacing_tolerance`` is the allowed relative deviation of a slice gap from the median gap;
    ``bone_kernel_patterns`` / ``bone_window`` define a bone-window reconstruction (``scan_checks.CheckSettings``).
    The checks, in order: ``scan_checks.list_slice_files``, ``scan_checks.read_series``, then each of
    ``scan_checks.SERIES_CHECKS`` (same series, CT modality, not a bone-window reconstruction, geometry tags present, same size and
    orientation, decodable transfer syntax, no duplicate slices, slice count, uniform spacing, no
    missing slices, InstanceNumber present and in position order).
    """
    root = Path(folder)
    series = read_series(root, list_slice_files(root))
    settings = CheckSettings(min_slices, spacing_tolerance, tuple(bone_kernel_patterns), bone_window)
    run_series_checks(series, settings)

    first = series.geometry[0]
    syntaxes = series.transfer_syntaxes
    return SeriesInfo(
        path=str(root),
        n_slices=len(series.slices),
        rows=first.rows,
        columns=first.columns,
        spacing=(float(first.pixel_spacing[1]), float(first.pixel_spacing[0]), series.median_gap),
        modality="CT",
        transfer_syntax=str(next(iter(syntaxes))),
        compressed=any(ts.is_compressed for ts in syntaxes),
        series_uid=next(iter(series.series_uids)),
    )


def validate_nifti(path: str | Path, *, min_slices: int = 10) -> SeriesInfo:
    """Check a .nii/.nii.gz scan from its header only; slices run along the third axis."""
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise fail(p, "not_found", "file does not exist.", "check the scan path in your table.")
    try:
        img = nib.load(p)  # lazy: reads the header, not the voxels
        shape = tuple(int(s) for s in img.shape)
        zooms = tuple(float(z) for z in img.header.get_zooms())
    except Exception as e:  # a corrupt file must not stop the run
        raise fail(
            p,
            "unreadable",
            f"cannot read the NIfTI header ({type(e).__name__}: {e}).",
            "re-convert the scan (e.g. with dcm2niix) or re-copy it (it may be truncated).",
        ) from None
    if len(shape) < 3 or any(s > 1 for s in shape[3:]):
        raise fail(
            p,
            "not_3d",
            f"image has shape {shape}; expected one 3-D volume.",
            "split the time series / multi-volume file and list one 3-D volume per scan "
            "(e.g. `fslsplit` or nibabel's `four_to_three`).",
        )
    if shape[2] < min_slices:
        raise fail(
            p,
            "too_few_slices",
            f"only {shape[2]} slices along the third axis (need at least {min_slices}).",
            TOO_FEW_SLICES_FIX,
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
# is validated again. 2: bone-window reconstructions are rejected (scan_checks.check_not_bone_window).
VALIDATION_VERSION = 2


def validate_scan(path: str | Path, **kw) -> SeriesInfo:
    """Validate a DICOM series folder or a .nii/.nii.gz file; ``kw`` go to the matching validator."""
    p = Path(path)
    if p.is_dir():
        return validate_series(p, **kw)
    if re.search(r"\.nii(\.gz)?$", p.name, flags=re.IGNORECASE):
        # NIfTI carries one spacing per axis (nothing to compare) and no kernel or window tags.
        for key in ("spacing_tolerance", "bone_kernel_patterns", "bone_window"):
            kw.pop(key, None)
        return validate_nifti(p, **kw)
    if not p.exists():
        raise fail(p, "not_found", "path does not exist.", "check the scan path in your table.")
    raise fail(
        p,
        "unreadable",
        "unsupported scan format.",
        "supported formats are a folder holding one DICOM series, or a .nii / .nii.gz file; convert the scan "
        "(e.g. with dcm2niix) or point at the series folder.",
    )
