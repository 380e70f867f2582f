"""Issue 21 items 2, 3 and 5 for head CT: every input problem, tried as a new user would, ends in one
message naming the scan, the file and the fix, in ``reportsup-check-scans`` (quarantined, the rest
proceeds) and in the DataModule (setup, or the first epoch's caching) alike; a series numbered off its
slice positions is read in position order.

Real files where they exist: pydicom's test files (``MR_small.dcm``, ``no_meta.dcm``) and pydicom-data's
(``693_UNCI.dcm``, a real head CT slice; ``bad_sequence.dcm``, a real CT slice compressed as JPEG
Lossless with no decoder installed here; ``eCT_Supplemental.dcm``, a real Enhanced CT); damaged copies
of the synthetic phantoms otherwise. Each row of ``docs/hospital/input-errors.md`` "Head CT" is one of
these cases.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import JPEGLosslessSV1, generate_uid

from datamodules.crossdl.head_ct.datamodule import CheckedScans, HeadCTDataModule
from datamodules.crossdl.head_ct.dicom_series import ScanError, validate_scan, write_dicom_series
from datamodules.crossdl.head_ct.manifest import ManifestError, read_scan_manifest
from datamodules.crossdl.head_ct.transforms import IMAGE, LoadScand, PreprocessConfig, preprocessing
from reportsup.cli import check_scans

SCAN = "HCT00000"  # the scan each case damages


# ---------------------------------------------------------------------------------------------- helpers


def _copy(ct_dir: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(ct_dir, data)
    return data


def _set_row(data: Path, scan_id: str = SCAN, **values: str) -> None:
    manifest = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    for column, value in values.items():
        manifest.loc[manifest["scan_id"] == scan_id, column] = value
    manifest.to_csv(data / "manifest.csv", index=False)


def _image(data: Path, scan_id: str = SCAN) -> Path:
    manifest = pd.read_csv(data / "manifest.csv", dtype=str)
    return data / manifest.set_index("scan_id").at[scan_id, "image"]


def _quarantine(data: Path, decode: bool = False) -> pd.DataFrame:
    """What ``reportsup-check-scans`` quarantines (its own function, every *mask column checked)."""
    manifest = read_scan_manifest(data / "manifest.csv")
    masks = [c for c in manifest.columns if str(c).endswith("mask")]
    _, quarantine, _ = check_scans.check_manifest(manifest, masks, decode=decode, progress=False)
    return quarantine.set_index("scan_id")


def _datamodule(data: Path, tmp_path: Path) -> HeadCTDataModule:
    return HeadCTDataModule(
        str(data / "manifest.csv"),
        labels_path=str(data / "reports.csv"),
        region_mask_column="true_region_mask",
        spatial_size=(32, 32, 16),
        cache_dir=str(tmp_path / "cache"),
        split={"seed": 0},
    )


def _first_epoch(dm: HeadCTDataModule) -> None:
    """Setup, then every item of every set, as the first epoch (and its caching) reads them."""
    dm.setup()
    for dataset in dm.datasets.values():
        for i in range(len(dataset)):
            dataset[i]


def _assert_message(message: str, *words: str) -> None:
    assert " Fix: " in message, message
    assert "Traceback" not in message, message
    for word in words:
        assert word in message, f"{word!r} not in: {message}"


# ------------------------------------------------------------------------- damages (each returns words)


def _truncated_slice(data: Path) -> tuple[str, ...]:
    """A phantom slice cut short (an interrupted copy): its header still parses."""
    victim = sorted(_image(data).iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:-3000])
    return "truncated", f"{victim.name} is truncated", "re-copy"


def _mr_series(data: Path) -> tuple[str, ...]:
    """pydicom's MR_small.dcm where the CT series should be."""
    folder = _image(data)
    shutil.rmtree(folder)
    folder.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), folder)
    return "not_ct", "Modality is 'MR', not CT (e.g. MR_small.dcm)", "CT in Hounsfield units"


def _jpeg_ct_without_decoder(data: Path) -> tuple[str, ...]:
    """pydicom-data's bad_sequence.dcm: a real CT slice compressed as JPEG Lossless (Process 14 SV1)."""
    folder = _image(data)
    shutil.rmtree(folder)
    folder.mkdir()
    shutil.copy(get_testdata_file("bad_sequence.dcm"), folder)
    return "no_decoder", "JPEG Lossless", "pip install pylibjpeg pylibjpeg-libjpeg"


def _non_dicom_file(data: Path) -> tuple[str, ...]:
    """pydicom's no_meta.dcm (no preamble, no file meta: not a DICOM Part 10 file) among the slices."""
    shutil.copy(get_testdata_file("no_meta.dcm"), _image(data) / "no_meta.dcm")
    return "unreadable", "no_meta.dcm is not a DICOM file", "re-export the series as DICOM Part 10"


def _enhanced_ct(data: Path) -> tuple[str, ...]:
    """pydicom-data's eCT_Supplemental.dcm: a real Enhanced CT file, 2 frames in one file."""
    folder = _image(data)
    shutil.rmtree(folder)
    folder.mkdir()
    shutil.copy(get_testdata_file("eCT_Supplemental.dcm"), folder)
    return "multi_frame", "eCT_Supplemental.dcm is a multi-frame image (2 frames", "dcm2niix"


def _cut_nifti(data: Path) -> tuple[str, ...]:
    """The phantom's NIfTI copy cut in half (its gzip header and NIfTI header still read)."""
    nifti = data / "nifti" / f"{SCAN}.nii.gz"
    nifti.write_bytes(nifti.read_bytes()[: nifti.stat().st_size // 2])
    _set_row(data, image=f"nifti/{SCAN}.nii.gz")
    return "truncated", f"{SCAN}.nii.gz: the file is cut short", "re-copy the file"


def _nifti_4d(data: Path) -> tuple[str, ...]:
    """A NIfTI holding two volumes (a time series) where one scan is expected."""
    img = nib.load(data / "nifti" / f"{SCAN}.nii.gz")
    vol = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.stack([vol, vol], -1), img.affine), data / "nifti" / "two.nii.gz")
    _set_row(data, image="nifti/two.nii.gz")
    return "not_3d", "two.nii.gz: image has shape", "split the time series"


def _mask_of_another_shape(data: Path) -> tuple[str, ...]:
    """A voxel mask of 10 x 10 x 10 for an 80 x 80 x 24 scan (the DataModule used to resample it)."""
    nib.save(
        nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)),
        data / "truth" / f"{SCAN}_lesions.nii.gz",
    )
    return (
        "mask_shape",
        f"{SCAN}_lesions.nii.gz: voxel_mask file has shape (10, 10, 10)",
        "reportsup-register-atlas",
    )


def _mask_off_the_grid(data: Path) -> tuple[str, ...]:
    """The scan's own mask moved 30 mm in space (the mask of another reconstruction of the study)."""
    path = data / "truth" / f"{SCAN}_lesions.nii.gz"
    img = nib.load(path)
    affine = img.affine.copy()
    affine[2, 3] += 30.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), path)
    return "mask_geometry", "voxel_mask file has the scan's size but not its place in space", "30.0 mm apart"


def _mask_missing(data: Path) -> tuple[str, ...]:
    (data / "truth" / f"{SCAN}_regions.nii.gz").unlink()
    return "mask_missing", f"{SCAN}_regions.nii.gz: true_region_mask file does not exist", "register-atlas"


def _mask_unreadable(data: Path) -> tuple[str, ...]:
    (data / "truth" / f"{SCAN}_regions.nii.gz").write_bytes(b"this is not a NIfTI file")
    return "mask_unreadable", "true_region_mask file is not a readable NIfTI image", "re-create the mask"


def _cut_mask(data: Path) -> tuple[str, ...]:
    """The region mask cut short: its header reads (a lazy load passes), its voxels do not."""
    path = data / "truth" / f"{SCAN}_regions.nii.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "truncated", f"{SCAN}_regions.nii.gz: the file is cut short", "re-copy the file"


def _too_few_slices(data: Path) -> tuple[str, ...]:
    for f in sorted(_image(data).iterdir())[5:]:
        f.unlink()
    return "too_few_slices", "only 5 slices (need at least 10)", "Figure S3a"


CASES: dict[str, Callable[[Path], tuple[str, ...]]] = {
    "truncated_slice": _truncated_slice,
    "mr_series": _mr_series,
    "jpeg_ct_without_decoder": _jpeg_ct_without_decoder,
    "non_dicom_file": _non_dicom_file,
    "enhanced_ct": _enhanced_ct,
    "cut_nifti": _cut_nifti,
    "nifti_4d": _nifti_4d,
    "mask_of_another_shape": _mask_of_another_shape,
    "mask_off_the_grid": _mask_off_the_grid,
    "mask_missing": _mask_missing,
    "mask_unreadable": _mask_unreadable,
    "cut_mask": _cut_mask,
    "too_few_slices": _too_few_slices,
}


def test_the_jpeg_case_really_has_no_decoder_here():
    # if someone installs pylibjpeg-libjpeg, the JPEG case would test nothing: it must then change
    assert not get_decoder(JPEGLosslessSV1).is_available


@pytest.mark.parametrize("case", list(CASES))
def test_check_scans_and_the_datamodule_give_the_same_message(case, ct_dir, tmp_path):
    """One implementation (``validate_manifest_row``): the check command quarantines the scan with its
    reason while the other scans pass; the DataModule's setup stops with the same message, naming the
    scan, before any voxel is cached."""
    data = _copy(ct_dir, tmp_path)
    reason, *words = CASES[case](data)

    quarantine = _quarantine(data)
    assert quarantine.index.tolist() == [SCAN], quarantine  # the other nine scans proceed
    assert quarantine.at[SCAN, "reason"] == reason
    message = quarantine.at[SCAN, "message"]
    _assert_message(message, *words)

    dm = _datamodule(data, tmp_path)
    with pytest.raises(ManifestError) as err:
        dm.setup()
    _assert_message(str(err.value), f"scan {SCAN}: {message}", "reportsup-check-scans")
    assert not list((tmp_path / "cache").glob("*/*.pt"))  # refused before the first epoch


# ----------------------------------------------------------------------- voxel-level: NaN, undecodable


def _nan_nifti(data: Path) -> Path:
    """The phantom's NIfTI as float32 with 7 NaN voxels and one +inf (e.g. a bad resampling)."""
    img = nib.load(data / "nifti" / f"{SCAN}.nii.gz")
    vol = np.asarray(img.dataobj).astype(np.float32)
    vol[40, 40, 5:12] = np.nan
    vol[1, 1, 1] = np.inf
    path = data / "nifti" / f"{SCAN}_float.nii.gz"
    nib.save(nib.Nifti1Image(vol, img.affine), path)
    _set_row(data, image=f"nifti/{SCAN}_float.nii.gz")
    return path


NAN_WORDS = ("image holds 7 NaN and 1 infinite voxel(s)", "re-convert the scan")


def test_a_nifti_holding_nan_is_quarantined_without_decode(ct_dir, tmp_path):
    data = _copy(ct_dir, tmp_path)
    path = _nan_nifti(data)
    quarantine = _quarantine(data)
    assert quarantine.index.tolist() == [SCAN] and quarantine.at[SCAN, "reason"] == "non_finite"
    _assert_message(quarantine.at[SCAN, "message"], str(path), *NAN_WORDS)
    # the DataModule's setup reads headers only: an integer NIfTI could not hold NaN, a float one can
    with pytest.raises(ScanError, match="non_finite|NaN"):
        validate_scan(path, voxels=True)
    assert validate_scan(path).n_slices == 24


def test_a_nifti_holding_nan_stops_the_first_epoch_naming_the_scan(ct_dir, tmp_path):
    """The voxel check runs where the volume is first loaded: at setup for a training scan (the
    intensity statistics read them), else when the first epoch caches it; never the old "the training
    images are constant" from a NaN mean, never a MONAI traceback."""
    data = _copy(ct_dir, tmp_path)
    path = _nan_nifti(data)
    with pytest.raises(ScanError) as err:
        _first_epoch(_datamodule(data, tmp_path))
    assert err.value.reason == "non_finite"
    _assert_message(str(err.value), f"scan {SCAN}: {path}", *NAN_WORDS)
    assert "constant" not in str(err.value) and "applying transform" not in str(err.value)


def _rle_series_with_a_corrupt_slice(folder: Path) -> Path:
    """A phantom written RLE-compressed, one slice's RLE header damaged (the number of segments): every
    header check passes (the syntax has a decoder), the pixels do not decode."""
    vol = np.full((16, 16, 12), -1000.0, np.float32)
    vol[4:12, 4:12, 2:10] = 40.0
    paths = write_dicom_series(
        vol, (1.0, 1.0, 5.0), folder, patient_id="P", seed_uid="rle", transfer_syntax="rle"
    )
    ds = pydicom.dcmread(paths[4])
    fragment = bytearray(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1).__next__())
    fragment[0:4] = (15).to_bytes(4, "little")  # 15 segments claimed, offsets all zero
    ds.PixelData = pydicom.encaps.encapsulate([bytes(fragment)])
    ds.save_as(paths[4])
    return paths[4]


def test_pixels_that_do_not_decode_name_the_scan_in_check_decode_and_at_caching(tmp_path):
    folder = tmp_path / "rle"
    bad = _rle_series_with_a_corrupt_slice(folder)
    assert validate_scan(folder).compressed  # headers alone cannot see it

    manifest = pd.DataFrame({"scan_id": ["rle1"], "patient_id": ["p1"], "image": [str(folder)]})
    _, quarantine, _ = check_scans.check_manifest(manifest, [], decode=True, progress=False)
    assert quarantine["reason"].tolist() == ["decode_failed"]
    _assert_message(
        quarantine["message"][0], str(folder), "scan rle1: the pixel data cannot be read", "--decode"
    )

    # the DataModule's cached sets: the same failure at the first epoch's caching, as one ScanError
    from monai.data import PersistentDataset

    pre = preprocessing(PreprocessConfig(spatial_size=(8, 8, 8)), ())
    cached = CheckedScans(
        PersistentDataset([{IMAGE: str(folder)}], pre, tmp_path / "cache"), ["rle1"], [str(folder)]
    )
    with pytest.raises(ScanError) as err:
        cached[0]
    assert err.value.reason == "decode_failed" and err.value.__cause__ is None  # no MONAI chain attached
    _assert_message(str(err.value), str(folder), "scan rle1", "re-export")
    assert bad.name  # the damaged file is in the folder named
    with pytest.raises(IndexError):
        cached[1]


# ---------------------------------------------------------------------------- item 2: position order


def _real_ct_series(folder: Path, numbers: list[int]) -> None:
    """pydicom-data's 693_UNCI.dcm (a real head CT slice, 512 x 512) as a series of len(numbers)
    slices 5 mm apart, each slice's pixels rolled by its index so any reordering shows;
    ``numbers[k]`` is slice k's InstanceNumber."""
    source = pydicom.dcmread(get_testdata_file("693_UNCI.dcm"))
    pixels = source.pixel_array
    folder.mkdir(parents=True)
    x, y, z = (float(v) for v in source.ImagePositionPatient)
    for k, number in enumerate(numbers):
        ds = copy.deepcopy(source)
        ds.ImagePositionPatient = [x, y, z + 5.0 * k]
        ds.SliceLocation = z + 5.0 * k
        ds.InstanceNumber = number
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
            entropy_srcs=["693", str(k)]
        )
        ds.PixelData = np.ascontiguousarray(np.roll(pixels, 9 * k, axis=1)).tobytes()
        ds.save_as(folder / f"slice{(k * 7) % len(numbers):02d}.dcm")  # file names in no order either


def test_a_real_ct_series_numbered_off_its_positions_loads_voxel_identical(tmp_path, caplog):
    n = 12
    _real_ct_series(tmp_path / "ordered", list(range(1, n + 1)))
    shuffled = [int(v) + 1 for v in np.random.default_rng(21).permutation(n)]
    _real_ct_series(tmp_path / "shuffled", shuffled)

    assert validate_scan(tmp_path / "ordered").moved_slices == 0
    info = validate_scan(tmp_path / "shuffled")  # accepted, not refused (issue 21 item 2)
    assert info.moved_slices > 0

    load = LoadScand([IMAGE])
    with caplog.at_level("INFO"):
        shuffled_img = load({IMAGE: str(tmp_path / "shuffled")})[IMAGE]
    ordered_img = load({IMAGE: str(tmp_path / "ordered")})[IMAGE]
    assert torch.equal(shuffled_img, ordered_img)
    np.testing.assert_allclose(np.asarray(shuffled_img.affine), np.asarray(ordered_img.affine))
    np.testing.assert_allclose(np.asarray(shuffled_img.affine), np.asarray(info.affine), atol=1e-4)
    assert (
        f"{tmp_path / 'shuffled'}: {info.moved_slices} of {n} slices are out of InstanceNumber order"
        in caplog.text
    )

    # and the check command keeps it, saying so
    manifest = pd.DataFrame(
        {
            "scan_id": ["ordered", "shuffled"],
            "patient_id": ["p1", "p2"],
            "image": [str(tmp_path / "ordered"), str(tmp_path / "shuffled")],
        }
    )
    checked, quarantine, _ = check_scans.check_manifest(manifest, [], progress=False)
    assert quarantine.empty and checked["reordered"].tolist() == [0, info.moved_slices]


def test_the_datamodules_preprocessing_of_a_shuffled_phantom_equals_the_ordered_one(ct_dir, tmp_path):
    """Preprocessing as the DataModule and prediction run it: the same voxels whatever the numbering."""
    source = _image(ct_dir)
    shuffled = tmp_path / "shuffled"
    shutil.copytree(source, shuffled)
    files = sorted(shuffled.iterdir())
    numbers = np.random.default_rng(5).permutation(len(files)) + 1
    for f, number in zip(files, numbers, strict=True):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = int(number)
        ds.save_as(f)
    assert validate_scan(shuffled).moved_slices > 0
    pre = preprocessing(PreprocessConfig(spatial_size=(32, 32, 16)), ())
    a, b = pre({IMAGE: str(source)})[IMAGE], pre({IMAGE: str(shuffled)})[IMAGE]
    assert torch.equal(a.as_tensor(), b.as_tensor())


def test_only_what_cannot_be_made_right_is_refused(tmp_path):
    """Duplicated and missing positions and mixed orientations are still refused (item 2)."""
    _real_ct_series(tmp_path / "dup", list(range(1, 13)))
    second = sorted((tmp_path / "dup").iterdir())[0]
    ds = pydicom.dcmread(second)
    ds.ImagePositionPatient = pydicom.dcmread(sorted((tmp_path / "dup").iterdir())[1]).ImagePositionPatient
    ds.save_as(second)
    with pytest.raises(ScanError, match="share a position") as err:
        validate_scan(tmp_path / "dup")
    assert err.value.reason == "duplicate_slices"

    _real_ct_series(tmp_path / "gap", list(range(1, 13)))
    (tmp_path / "gap" / "slice02.dcm").unlink()
    with pytest.raises(ScanError) as err:
        validate_scan(tmp_path / "gap")
    assert err.value.reason == "missing_slices"

    _real_ct_series(tmp_path / "tilted", list(range(1, 13)))
    tilted = sorted((tmp_path / "tilted").iterdir())[5]
    ds = pydicom.dcmread(tilted)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, -0.6]
    ds.save_as(tilted)
    with pytest.raises(ScanError, match="ImageOrientationPatient") as err:
        validate_scan(tmp_path / "tilted")
    assert err.value.reason == "inconsistent_size"


def test_a_data_loader_worker_raises_the_message_not_its_traceback(tmp_path):
    """With num_workers > 0 torch re-raises a worker's exception as ``type(text with the worker's
    traceback)``; a ScanError keeps only its own message."""
    from monai.data import PersistentDataset
    from torch.utils.data import DataLoader

    folder = tmp_path / "rle"
    _rle_series_with_a_corrupt_slice(folder)
    pre = preprocessing(PreprocessConfig(spatial_size=(8, 8, 8)), ())
    cached = CheckedScans(
        PersistentDataset([{IMAGE: str(folder)}], pre, tmp_path / "cache"), ["rle1"], [str(folder)]
    )
    with pytest.raises(ScanError) as err:
        next(iter(DataLoader(cached, batch_size=1, num_workers=1, collate_fn=lambda batch: batch)))
    message = str(err.value)
    assert message.startswith(f"{folder}: scan rle1: the pixel data cannot be read"), message
    assert "Traceback" not in message and "DataLoader worker" not in message, message


def test_a_manifest_cell_is_empty_when_it_is_empty_not_when_it_reads_nan(tmp_path):
    """The text "nan" is an id (it was refused as an empty cell); a truly empty cell names its row."""
    path = tmp_path / "manifest.csv"
    pd.DataFrame({"scan_id": ["nan", "s2"], "patient_id": ["None", "p2"], "image": ["a", "b"]}).to_csv(
        path, index=False
    )
    assert read_scan_manifest(path)[["scan_id", "patient_id"]].values.tolist() == [
        ["nan", "None"],
        ["s2", "p2"],
    ]
    path.write_text("scan_id,patient_id,image\ns1,,a\n")
    with pytest.raises(ManifestError, match="row 1, column 'patient_id' is empty"):
        read_scan_manifest(path)
    pd.DataFrame({"scan_id": ["s1"], "patient_id": [None], "image": ["a"]}).to_parquet(tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match="column 'patient_id' is empty"):
        read_scan_manifest(tmp_path / "m.parquet")
