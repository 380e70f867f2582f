"""DICOM series writer and header validator: round trips, HU, RAS orientation through MONAI, one test per error."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.dataset import validate_file_meta
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless

from datamodules.crossdl.head_ct.dicom_series import (
    MONAI_DICOM_READER_ARGS,
    ScanError,
    SeriesInfo,
    validate_nifti,
    validate_scan,
    validate_series,
    write_dicom_series,
)

SHAPE = (10, 8, 12)  # (x: Left, y: Posterior, z: Superior); all different to catch axis swaps
SPACING = (0.5, 0.7, 5.0)
ORIGIN = (-40.0, -50.0, 10.0)


def _phantom() -> np.ndarray:
    """Non-symmetric head-like volume in HU: air, a brain block, and a bone marker."""
    vol = np.full(SHAPE, -1000.0, dtype=np.float32)
    vol[2:8, 2:6, 2:10] = 40.0
    vol[8, 1, 10] = 1000.0  # near patient left (high x), anterior (low y), superior (high z)
    return vol


def _write(folder: Path, vol: np.ndarray | None = None, **kw) -> list[Path]:
    kw.setdefault("patient_id", "P001")
    kw.setdefault("seed_uid", "test")
    kw.setdefault("origin", ORIGIN)
    return write_dicom_series(_phantom() if vol is None else vol, SPACING, folder, **kw)


def _edit(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def _by_instance(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber))


def _raises(folder, reason: str, *words: str, **kw) -> ScanError:
    with pytest.raises(ScanError) as info:
        validate_scan(folder, **kw)
    err = info.value
    assert err.reason == reason, str(err)
    assert str(err).startswith(str(folder)), str(err)
    for word in words:
        assert word in str(err), f"{word!r} not in: {err}"
    return err


def _monai_ras(folder: Path):
    from monai.transforms import EnsureChannelFirst, LoadImage, Orientation

    img = LoadImage(reader="PydicomReader", image_only=True, **MONAI_DICOM_READER_ARGS)(folder)
    return Orientation(axcodes="RAS", labels=None)(EnsureChannelFirst()(img))


# ---------------------------------------------------------------------------------------------------- writer


def test_round_trip_series_info(tmp_path):
    paths = _write(tmp_path / "s")
    info = validate_series(tmp_path / "s")
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert info == SeriesInfo(
        path=str(tmp_path / "s"),
        n_slices=12,
        rows=8,
        columns=10,
        spacing=SPACING,
        modality="CT",
        transfer_syntax=ExplicitVRLittleEndian,
        compressed=False,
        series_uid=ds.SeriesInstanceUID,
        # voxel (column, row, slice) -> RAS: x and y of LPS negated, origin at the first slice
        affine=((-0.5, 0.0, 0.0, 40.0), (0.0, -0.7, 0.0, 50.0), (0.0, 0.0, 5.0, 10.0), (0.0, 0.0, 0.0, 1.0)),
        moved_slices=0,
    )
    assert info.shape == SHAPE
    # Names are IM0000..IM0011 but not in slice order, so readers must not sort by name.
    assert sorted(p.name for p in paths) == [f"IM{k:04d}.dcm" for k in range(12)]
    assert [p.name for p in paths] != sorted(p.name for p in paths)
    assert [int(pydicom.dcmread(p).InstanceNumber) for p in paths] == list(range(1, 13))


def test_seeded_uids_are_deterministic_and_unique(tmp_path):
    def uids(folder: Path, **kw) -> list[str]:
        return [str(pydicom.dcmread(p).SOPInstanceUID) for p in _write(folder, **kw)]

    a, b = uids(tmp_path / "a"), uids(tmp_path / "b")
    assert a == b and len(set(a)) == len(a)
    assert set(uids(tmp_path / "c", seed_uid=None)).isdisjoint(a)


@pytest.mark.parametrize("syntax", ["explicit_little", "rle"])
def test_files_are_standard_ct_image_storage(tmp_path, monkeypatch, syntax):
    monkeypatch.setattr(config.settings, "writing_validation_mode", config.RAISE)
    paths = _write(tmp_path / "s", transfer_syntax=syntax)
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.RAISE)
    sop_uids = set()
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        validate_file_meta(ds.file_meta, enforce_standard=True)
        for elem in ds.iterall():  # value conversion validates every element's VR in RAISE mode
            _ = elem.value
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == CTImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == (RLELossless if syntax == "rle" else ExplicitVRLittleEndian)
        assert ds.file_meta.ImplementationClassUID
        sop_uids.add(ds.SOPInstanceUID)
        assert ds.Modality == "CT" and ds.PatientID == "P001" and ds.PatientName
        assert ds.StudyInstanceUID and ds.SeriesInstanceUID and ds.FrameOfReferenceUID
        assert ds.SeriesDescription == "HEAD 5mm" and ds.InstanceNumber == k + 1
        assert [float(v) for v in ds.ImagePositionPatient] == [ORIGIN[0], ORIGIN[1], ORIGIN[2] + 5.0 * k]
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.5]  # row spacing (dy), column spacing (dx)
        assert float(ds.SliceThickness) == 5.0 and (ds.Rows, ds.Columns) == (8, 10)
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 1)
        assert (ds.SamplesPerPixel, ds.PhotometricInterpretation) == (1, "MONOCHROME2")
        assert (float(ds.RescaleIntercept), float(ds.RescaleSlope), ds.RescaleType) == (-1024.0, 1.0, "HU")
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (35.0, 90.0)
        assert ds.pixel_array.dtype == np.int16
    assert len(sop_uids) == len(paths)


def test_hu_conversion_raw_and_monai(tmp_path):
    vol = np.zeros(SHAPE, dtype=np.float32)
    vol[0:3], vol[3:5], vol[5:7], vol[7:] = -1000, 0, 40, 1000  # bands along x (columns)
    vol[9, 7, 11] = 40000  # beyond int16 after the intercept: clipped to 32767 - 1024 HU
    paths = _write(tmp_path / "s", vol)
    raw = pydicom.dcmread(paths[0]).pixel_array  # slice k=0: rows follow y, columns follow x
    assert raw.shape == (8, 10)
    np.testing.assert_array_equal(raw[0], [24, 24, 24, 1024, 1024, 1064, 1064, 2024, 2024, 2024])
    assert pydicom.dcmread(paths[11]).pixel_array[7, 9] == 32767

    hu = np.asarray(_monai_ras(tmp_path / "s")[0])
    expected = np.flip(np.where(vol > 30000, 32767 - 1024, vol), (0, 1))
    np.testing.assert_array_equal(hu, expected)


def test_hu_with_other_rescale(tmp_path):
    vol = np.round(np.linspace(-1000, 1000, np.prod(SHAPE)).reshape(SHAPE) / 2) * 2  # even: exact at slope 2
    _write(tmp_path / "s", vol, rescale_intercept=-2000.0, rescale_slope=2.0)
    np.testing.assert_allclose(np.asarray(_monai_ras(tmp_path / "s")[0]), np.flip(vol, (0, 1)))


@pytest.mark.parametrize("syntax", ["explicit_little", "rle"])
def test_monai_loads_hu_in_ras(tmp_path, syntax):
    vol = _phantom()
    _write(tmp_path / "s", vol, transfer_syntax=syntax)
    img = _monai_ras(tmp_path / "s")
    arr = np.asarray(img[0])
    np.testing.assert_array_equal(arr, np.flip(vol, (0, 1)))
    # The left/anterior/superior marker: low R index (left), high A index (anterior), high S index.
    idx = np.unravel_index(np.argmax(arr), arr.shape)
    assert idx == (SHAPE[0] - 1 - 8, SHAPE[1] - 1 - 1, 10)
    # And the affine puts it at its RAS world position (RAS = (-x, -y, z) of LPS).
    lps = np.array(ORIGIN) + np.array([8, 1, 10]) * np.array(SPACING)
    world = np.asarray(img.affine, dtype=float) @ np.array([*idx, 1.0])
    np.testing.assert_allclose(world[:3], [-lps[0], -lps[1], lps[2]], atol=1e-6)


def test_rle_round_trip(tmp_path):
    vol = np.random.default_rng(0).integers(-1024, 3000, size=SHAPE).astype(np.int16)
    paths = _write(tmp_path / "s", vol, transfer_syntax="rle")
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        np.testing.assert_array_equal(ds.pixel_array, vol[:, :, k].T + 1024)
    info = validate_series(tmp_path / "s")
    assert info.compressed and info.transfer_syntax == RLELossless and info.n_slices == 12


# ---------------------------------------------------------------------------------------------------- errors


def test_not_found(tmp_path):
    _raises(tmp_path / "nope", "not_found", "does not exist")
    _raises(tmp_path / "nope.nii.gz", "not_found", "does not exist")


def test_no_dicom(tmp_path):
    (tmp_path / "empty").mkdir()
    _raises(tmp_path / "empty", "no_dicom", "no DICOM files")
    # Hidden files and DICOMDIR are not slices.
    (tmp_path / "only_junk").mkdir()
    (tmp_path / "only_junk" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "only_junk" / "DICOMDIR").write_bytes(b"x")
    _raises(tmp_path / "only_junk", "no_dicom")


def test_hidden_files_and_dicomdir_are_ignored_by_validator_and_monai(tmp_path):
    _write(tmp_path / "s")
    (tmp_path / "s" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "s" / "DICOMDIR").write_bytes(b"junk")
    assert validate_series(tmp_path / "s").n_slices == 12
    np.testing.assert_array_equal(np.asarray(_monai_ras(tmp_path / "s")[0]), np.flip(_phantom(), (0, 1)))


def test_unreadable_non_dicom_file(tmp_path):
    _write(tmp_path / "s")
    (tmp_path / "s" / "x.dcm").write_text("not a dicom file\n")
    _raises(tmp_path / "s", "unreadable", "x.dcm", "not a DICOM file", "remove")


def test_unreadable_sub_folder(tmp_path):
    _write(tmp_path / "s")
    (tmp_path / "s" / "scouts").mkdir()
    _raises(tmp_path / "s", "unreadable", "scouts", "move the sub-folders out")


def test_mixed_series(tmp_path):
    paths = _write(tmp_path / "s")
    for path in paths[:3]:
        _edit(path, lambda ds: setattr(ds, "SeriesInstanceUID", "1.2.3.4.5"))
    err = _raises(tmp_path / "s", "mixed_series", "1.2.3.4.5 (3 files)", "(9 files)")
    assert "put each series in its own folder" in str(err)


def test_not_ct(tmp_path):
    _write(tmp_path / "s", modality="MR")
    _raises(tmp_path / "s", "not_ct", "'MR'", "not CT")


def test_missing_geometry(tmp_path):
    paths = _write(tmp_path / "s")
    _edit(paths[4], lambda ds: delattr(ds, "ImagePositionPatient"))
    _raises(tmp_path / "s", "missing_geometry", paths[4].name, "ImagePositionPatient", "re-export")


def test_inconsistent_size(tmp_path):
    paths = _write(tmp_path / "s")
    _edit(paths[2], lambda ds: setattr(ds, "PixelSpacing", [0.9, 0.9]))
    _raises(tmp_path / "s", "inconsistent_size", "PixelSpacing", "(11 files)", "(1 file)", "keep only")


def test_duplicate_slices(tmp_path):
    paths = _write(tmp_path / "s")
    shutil.copy(paths[5], tmp_path / "s" / "copy_of_slice5.dcm")
    _raises(tmp_path / "s", "duplicate_slices", paths[5].name, "copy_of_slice5.dcm", "delete the duplicate")


def test_missing_slices(tmp_path):
    paths = _write(tmp_path / "s")
    paths[6].unlink()  # z = 10 + 6 * 5 = 40 mm
    _raises(tmp_path / "s", "missing_slices", "1 slice(s) missing", "between 35.00 and 45.00 mm", "re-export")


def test_inconsistent_spacing(tmp_path):
    paths = _write(tmp_path / "s")

    def shift(ds):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 0.3 * SPACING[2]]

    _edit(paths[6], shift)
    _raises(
        tmp_path / "s", "inconsistent_spacing", "6.50 mm", "3.50 mm", "resampl", "remove the stray slices"
    )


def test_too_few_slices(tmp_path):
    write_dicom_series(_phantom()[:, :, :5], SPACING, tmp_path / "s", patient_id="P001")
    _raises(tmp_path / "s", "too_few_slices", "only 5 slices", "Liu et al. 2023", "Figure S3a")
    assert validate_series(tmp_path / "s", min_slices=5).n_slices == 5


@pytest.mark.parametrize(
    ("uid", "package"),
    [("1.2.840.10008.1.2.4.90", "pylibjpeg-openjpeg"), ("1.2.840.10008.1.2.4.80", "pylibjpeg-libjpeg")],
    ids=["jpeg2000", "jpegls"],
)
def test_no_decoder(tmp_path, monkeypatch, uid, package):
    from pydicom.pixels.decoders.base import get_decoder

    decoder = get_decoder(uid)
    if decoder.is_available:  # e.g. Pillow decodes JPEG 2000: pretend it is missing
        monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    paths = _write(tmp_path / "s")

    def compress(ds):
        ds.file_meta.TransferSyntaxUID = uid
        ds.PixelData = encapsulate([b"\x00\x01" * 8])  # dummy codestream: only the header matters here
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True

    for path in paths:
        _edit(path, compress)
    _raises(tmp_path / "s", "no_decoder", uid, package, "python-gdcm", "reportsup[dicom-codecs]")


def test_instance_numbers_off_the_positions_are_read_in_position_order(tmp_path, caplog):
    """Issue 21 item 2: accepted, counted and logged; our reader stacks by position, MONAI's would not."""
    from datamodules.crossdl.head_ct.transforms import LoadScand

    paths = _write(tmp_path / "s")
    _edit(paths[1], lambda ds: setattr(ds, "InstanceNumber", 6))  # slice 1 is air, slice 5 holds brain
    _edit(paths[5], lambda ds: setattr(ds, "InstanceNumber", 2))
    with caplog.at_level("INFO"):
        info = validate_series(tmp_path / "s")
    assert info.moved_slices == 2
    assert f"{tmp_path / 's'}: 2 of 12 slices are out of InstanceNumber order" in caplog.text
    # Why the reader matters: MONAI's PydicomReader stacks by InstanceNumber and swaps these two slices.
    assert not np.array_equal(np.asarray(_monai_ras(tmp_path / "s")[0]), np.flip(_phantom(), (0, 1)))
    loaded = LoadScand(["image"])({"image": str(tmp_path / "s")})["image"]
    np.testing.assert_array_equal(np.asarray(loaded[0]), _phantom())  # LPS-indexed, as written


def test_reversed_instance_numbers_are_fine(tmp_path):
    paths = _write(tmp_path / "s")
    for k, path in enumerate(paths):
        _edit(path, lambda ds, k=k: setattr(ds, "InstanceNumber", 12 - k))
    assert validate_series(tmp_path / "s").n_slices == 12
    np.testing.assert_array_equal(np.asarray(_monai_ras(tmp_path / "s")[0]), np.flip(_phantom(), (0, 1)))


# ---------------------------------------------------------------------------------------------------- NIfTI


def _nifti(path: Path, shape: tuple[int, ...]) -> Path:
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=np.int16), np.diag([0.5, 0.7, 5.0, 1.0])), path)
    return path


def test_nifti_round_trip(tmp_path):
    info = validate_scan(_nifti(tmp_path / "a.nii.gz", (10, 8, 12)))
    assert (info.n_slices, info.rows, info.columns, info.compressed) == (12, 8, 10, True)
    np.testing.assert_allclose(info.spacing, SPACING)
    assert validate_nifti(_nifti(tmp_path / "b.nii", (10, 8, 12, 1))).n_slices == 12


def test_nifti_errors(tmp_path):
    _raises(_nifti(tmp_path / "t.nii.gz", (10, 8, 12, 3)), "not_3d", "(10, 8, 12, 3)", "split")
    _raises(_nifti(tmp_path / "f.nii.gz", (10, 8, 5)), "too_few_slices", "only 5 slices", "Liu et al. 2023")
    (tmp_path / "bad.nii").write_text("hello")
    _raises(tmp_path / "bad.nii", "unreadable", "NIfTI header")


def test_validate_scan_rejects_other_formats(tmp_path):
    (tmp_path / "scan.mha").write_bytes(b"x")
    _raises(tmp_path / "scan.mha", "unreadable", "unsupported", ".nii.gz", "DICOM series")


def test_scan_error_survives_pickling(tmp_path):
    with pytest.raises(ScanError) as info:
        validate_scan(tmp_path / "nope")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.reason, str(copy), copy.path) == ("not_found", str(info.value), str(tmp_path / "nope"))
