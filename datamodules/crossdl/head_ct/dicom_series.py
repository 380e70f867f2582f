"""Write synthetic CT DICOM series and validate scans from their headers before training.

Cross-DL (Liu et al. 2023, head CT) reads each DICOM series to Hounsfield units. ``write_dicom_series``
writes phantoms as conformant CT Image Storage series; ``validate_series`` / ``validate_nifti`` /
``validate_scan`` read headers only and turn every unusable scan into one ``ScanError`` with a fix,
so a bad scan is reported up front instead of crashing a data-loader worker mid-run.

Pixels are read elsewhere with MONAI (:class:`~datamodules.crossdl.head_ct.transforms.LoadScand`)::

    LoadImage(reader=PositionSortedPydicomReader(**MONAI_DICOM_READER_ARGS), image_only=True)(folder)

What MONAI 1.6.1's ``PydicomReader`` does with a folder, and which check guards against each
quirk, is described in ``scan_checks``, which holds the checks as small named functions run in the
order of ``scan_checks.SERIES_CHECKS``. ``validate_manifest_row`` adds the scan's mask files: the one
check of a manifest row that ``reportsup-check-scans``, the DataModule's setup and prediction share. ``ScanError``, ``REASONS`` and ``MONAI_DICOM_READER_ARGS`` live
there and are re-exported here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
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
    check_mask_file,
    check_voxels_finite,
    fail,
    instance_order_moves,
    list_slice_files,
    read_series,
    run_series_checks,
    series_affine,
)

__all__ = [
    "MONAI_DICOM_READER_ARGS",
    "REASONS",
    "VALIDATION_VERSION",
    "ScanError",
    "SeriesInfo",
    "validate_manifest_row",
    "validate_nifti",
    "validate_scan",
    "validate_series",
    "write_dicom_series",
]

log = logging.getLogger(__name__)

_TRANSFER_SYNTAXES = {"explicit_little": ExplicitVRLittleEndian, "rle": RLELossless}


@dataclass(frozen=True)
class SeriesInfo:
    """Header summary of a usable scan; spacing is (column, row, slice) spacing in mm.

    ``affine``: voxel (column, row, slice) -> RAS mm, as rows of a 4 x 4 matrix (what mask files of the
    scan must match, ``scan_checks.check_mask_file``). ``moved_slices``: how many slices reading in
    position order puts elsewhere than their InstanceNumber says (issue 21 item 2; 0 for NIfTI).
    """

    path: str
    n_slices: int
    rows: int
    columns: int
    spacing: tuple[float, float, float]
    modality: str
    transfer_syntax: str
    compressed: bool
    series_uid: str
    affine: tuple[tuple[float, ...], ...] | None = None
    moved_slices: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape of the scan as MONAI reads it and mask files store it: (columns, rows, slices)."""
        return (self.columns, self.rows, self.n_slices)


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
    ``scan_checks.SERIES_CHECKS`` (same series, CT modality, not a bone-window reconstruction, one
    frame per file, geometry tags present, same size and orientation, decodable transfer syntax, pixel
    data complete, no duplicate slices, slice count, uniform spacing, no missing slices). InstanceNumbers are not checked: slices are read in position order, and the
    slices that moves is logged here and counted in ``SeriesInfo.moved_slices`` (issue 21 item 2).
    """
    root = Path(folder)
    series = read_series(root, list_slice_files(root))
    settings = CheckSettings(min_slices, spacing_tolerance, tuple(bone_kernel_patterns), bone_window)
    run_series_checks(series, settings)

    first = series.geometry[0]
    syntaxes = series.transfer_syntaxes
    moved = instance_order_moves(series)
    if moved:
        log.info(
            "%s: %d of %d slices are out of InstanceNumber order; they are read in slice-position order.",
            root,
            moved,
            len(series.slices),
        )
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
        affine=_rows(series_affine(series)),
        moved_slices=moved,
    )


def _rows(affine: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(affine))


def nifti_data_bytes(img) -> int:
    """Bytes a NIfTI file holds up to the end of its voxels: where the voxels start (the array proxy's
    offset; the loaded header reports vox_offset 0) plus the voxel data."""
    header = img.header
    n = int(np.prod(header.get_data_shape(), dtype=np.int64))
    offset = int(getattr(img.dataobj, "offset", header.get_data_offset()))
    return offset + n * np.dtype(header.get_data_dtype()).itemsize


def _gzip_member_complete(path: Path, expected: int) -> bool:
    """Whether a .gz file decompresses to at least ``expected`` bytes without error. First from the
    trailer (ISIZE: uncompressed size mod 2**32, the last 4 bytes), which a cut file does not keep; only
    when that disagrees (a cut file, or several gzip members) is the stream decompressed to be sure."""
    import gzip
    import zlib

    with path.open("rb") as f:
        f.seek(-4, 2)
        if int.from_bytes(f.read(4), "little") == expected % 2**32:
            return True
    total = 0
    try:
        with gzip.open(path, "rb") as g:
            while chunk := g.read(1 << 24):
                total += len(chunk)
    except (EOFError, OSError, zlib.error):
        return False
    return total >= expected


def check_nifti_complete(path: Path, img) -> None:
    """The file holds all the voxels its header declares (``truncated``).

    Why: a copy cut short keeps a readable header, so a header-only check passed it and the data loader
    failed inside nibabel on the first epoch (issue 21 item 5). For ``.nii`` the file size is compared,
    for ``.nii.gz`` the gzip trailer; neither reads the voxels.
    """
    expected = nifti_data_bytes(img)
    if path.name.lower().endswith(".gz"):
        complete = _gzip_member_complete(path, expected)
        holds = f"it decompresses to fewer than the {expected} bytes"
    else:
        size = path.stat().st_size
        complete, holds = size >= expected, f"it holds {size} of the {expected} bytes"
    if not complete:
        raise fail(
            path,
            "truncated",
            f"the file is cut short: {holds} its header declares "
            f"({' x '.join(str(int(s)) for s in img.shape)} voxels of {img.header.get_data_dtype()}).",
            "re-copy the file (the copy was interrupted), or re-convert the scan (e.g. with dcm2niix).",
        )


def nifti_may_hold_non_finite(img) -> bool:
    """Whether a NIfTI image's header lets its voxels be NaN or infinite: a floating-point data type, or a
    non-finite scaling (scl_slope / scl_inter). Integer data with finite scaling never is."""
    dtype = np.dtype(img.header.get_data_dtype())
    slope, inter = img.header.get_slope_inter()
    scaling = [v for v in (slope, inter) if v is not None]
    return dtype.kind in "fc" or not np.isfinite(np.asarray(scaling, dtype=np.float64)).all()


def validate_nifti(path: str | Path, *, min_slices: int = 10, voxels: bool = False) -> SeriesInfo:
    """Check a .nii/.nii.gz scan from its header; slices run along the third axis.

    ``voxels``: also read the voxels when the header cannot rule out NaN / infinite values
    (:func:`nifti_may_hold_non_finite`) and refuse any (``non_finite``). ``reportsup-check-scans`` does
    this; the DataModule checks the voxels when it first loads the volume (``transforms.LoadScand``).
    """
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
    check_nifti_complete(p, img)
    if voxels and nifti_may_hold_non_finite(img):
        try:
            data = np.asanyarray(img.dataobj)
        except Exception as e:  # a cut gzip stream or a short file: the header read, the voxels do not
            raise fail(
                p,
                "truncated",
                f"the voxels cannot be read ({type(e).__name__}: {e}).",
                "re-convert the scan (e.g. with dcm2niix) or re-copy it (the file may be cut short).",
            ) from None
        check_voxels_finite(data, p)
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
        affine=_rows(img.affine),
    )


# Bump when a check is added or changed: records of scans that passed older checks
# (HeadCTDataModule's validated-scans file in its cache folder) are then not trusted, and every scan
# is validated again. 2: bone-window reconstructions are rejected (scan_checks.check_not_bone_window).
# 3 (issue 21): InstanceNumber order no longer refused (slices read in position order); truncated pixel
# data, multi-frame files and masks off the scan's grid refused (check_pixel_data_complete,
# check_single_frame, validate_manifest_row).
VALIDATION_VERSION = 3


def validate_scan(path: str | Path, **kw) -> SeriesInfo:
    """Validate a DICOM series folder or a .nii/.nii.gz file; ``kw`` go to the matching validator
    (``voxels=True``: a NIfTI's voxels are checked for NaN / inf too)."""
    p = Path(path)
    # DICOM pixels are integers: NaN can only come from a NIfTI (voxels read by validate_nifti) or from
    # decoding, which LoadScand checks.
    voxels = bool(kw.pop("voxels", False))
    if p.is_dir():
        return validate_series(p, **kw)
    if re.search(r"\.nii(\.gz)?$", p.name, flags=re.IGNORECASE):
        # NIfTI carries one spacing per axis (nothing to compare) and no kernel or window tags.
        for key in ("spacing_tolerance", "bone_kernel_patterns", "bone_window"):
            kw.pop(key, None)
        return validate_nifti(p, voxels=voxels, **kw)
    if not p.exists():
        raise fail(p, "not_found", "path does not exist.", "check the scan path in your table.")
    raise fail(
        p,
        "unreadable",
        "unsupported scan format.",
        "supported formats are a folder holding one DICOM series, or a .nii / .nii.gz file; convert the scan "
        "(e.g. with dcm2niix) or point at the series folder.",
    )


def validate_manifest_row(
    image: str | Path, masks: Mapping[str, str | None] | None = None, **kw
) -> SeriesInfo:
    """Validate one manifest row: its scan (``validate_scan``, ``kw`` passed on) and each non-empty mask
    file (``{column: path}``) against the scan's shape and voxel grid (``scan_checks.check_mask_file``).

    The one implementation ``reportsup-check-scans``, ``HeadCTDataModule.setup`` and
    ``DaMILAnalyzer.predict_scans`` run (issue 21 item 5: the DataModule resampled a mask of another
    shape silently while the check command quarantined it). Raises the first problem as a ScanError.
    """
    info = validate_scan(image, **kw)
    affine = np.asarray(info.affine) if info.affine is not None else None
    for column, path in (masks or {}).items():
        if path:
            check_mask_file(str(path), column, info.shape, affine)
            import nibabel as nib

            check_nifti_complete(Path(path), nib.load(path))  # a cut mask reads its header, not its voxels
    return info
