"""Scan checks one by one: each named check fails on a small in-memory series and passes on a sound one.

Series are built from pydicom's bundled real CT header (``CT_small.dcm``), copied per slice with the
slice position and InstanceNumber set, so every check sees real CT tags; the modality check also uses
the bundled MR file, the decoder check bundled RLE and JPEG-LS files, the pixel-data check the bundled
truncated MR file and the multi-frame check pydicom-data's Enhanced CT file. Headers are read as
``read_series`` reads them (pixel data deferred: its length and offset, not its bytes).
"""

from __future__ import annotations

import copy
import inspect
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from datamodules.crossdl.head_ct import dicom_series, scan_checks
from datamodules.crossdl.head_ct.scan_checks import (
    SERIES_CHECKS,
    CheckSettings,
    ScanError,
    SeriesHeaders,
    check_decodable,
    check_geometry_present,
    check_modality,
    check_no_duplicate_slices,
    check_no_missing_slices,
    check_not_bone_window,
    check_pixel_data_complete,
    check_same_series,
    check_same_size_and_orientation,
    check_single_frame,
    check_slice_count,
    check_slice_spacing,
    classify_gaps,
    count_moves,
    fail,
    instance_order_moves,
    list_slice_files,
    position_order,
    read_series,
    run_series_checks,
)

FOLDER = Path("scans/P001")
GAP = 5.0  # mm between slices along the slice normal
DEFAULTS = CheckSettings()


def _header(name: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(name), defer_size=1024)


CT = _header("CT_small.dcm")


def _series(
    n: int = 12, *, base: Dataset = CT, normal: tuple[float, float, float] = (0, 0, 1)
) -> SeriesHeaders:
    """``n`` copies of ``base`` at GAP mm steps along ``normal`` (which must be the plane normal), numbered 1..n."""
    slices = []
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.ImagePositionPatient = [float(v) for v in np.asarray(normal) * GAP * k]
        ds.InstanceNumber = k + 1
        slices.append((FOLDER / f"IM{k:04d}.dcm", ds))
    return SeriesHeaders(FOLDER, slices)


def _set(series: SeriesHeaders, k: int, keyword: str, value) -> SeriesHeaders:
    """Set (or, with value None, delete) a tag of slice ``k``; returns the series for chaining."""
    ds = series.slices[k][1]
    if value is None:
        delattr(ds, keyword)
    else:
        setattr(ds, keyword, value)
    return series


def _raises(
    check, series: SeriesHeaders, reason: str, *words: str, settings: CheckSettings = DEFAULTS
) -> str:
    with pytest.raises(ScanError) as info:
        check(series, settings)
    err = info.value
    assert (err.reason, err.path) == (reason, str(series.folder)), str(err)
    assert str(err).startswith(f"{series.folder}: ") and " Fix: " in str(err), str(err)
    for word in words:
        assert word in str(err), f"{word!r} not in: {err}"
    return str(err)


def _passes(check, series: SeriesHeaders, settings: CheckSettings = DEFAULTS) -> None:
    assert check(series, settings) is None


# ---------------------------------------------------------------------------------------------- the list


def test_series_checks_lists_every_check_once_in_documented_order():
    defined = [  # every series check: check_* of (series, settings); mask and voxel checks take a file
        f
        for name, f in vars(scan_checks).items()
        if name.startswith("check_")
        and inspect.isfunction(f)
        and list(inspect.signature(f).parameters) == ["series", "settings"]
    ]
    assert {"check_mask_file", "check_voxels_finite"} <= set(vars(scan_checks))
    assert sorted(SERIES_CHECKS, key=lambda f: f.__name__) == sorted(defined, key=lambda f: f.__name__)
    assert len(set(SERIES_CHECKS)) == len(SERIES_CHECKS)
    for check in SERIES_CHECKS:
        assert check.__doc__ and "Why:" in check.__doc__, check.__name__
    # Dependencies the order must respect (each later check reads what the earlier one vouches for).
    pos = {f: i for i, f in enumerate(SERIES_CHECKS)}
    assert pos[check_geometry_present] < pos[check_same_size_and_orientation] < pos[check_no_duplicate_slices]
    assert pos[check_no_duplicate_slices] < pos[check_slice_spacing] < pos[check_no_missing_slices]
    assert pos[check_geometry_present] < pos[check_pixel_data_complete]  # reads Rows and Columns
    assert pos[check_single_frame] < pos[check_geometry_present]  # names the multi-frame file first
    # A bone reconstruction is reported as such even when its slices are also incomplete.
    assert pos[check_not_bone_window] < pos[check_geometry_present]


def test_sound_series_passes_every_check():
    run_series_checks(_series(), DEFAULTS)


def test_first_failing_check_in_list_order_is_reported():
    # Too few slices AND a duplicate: the duplicate is reported, as check_no_duplicate_slices comes first.
    series = _series(5)
    series.slices.append((FOLDER / "copy.dcm", copy.deepcopy(series.slices[2][1])))
    with pytest.raises(ScanError) as info:
        run_series_checks(series, DEFAULTS)
    assert info.value.reason == "duplicate_slices"


def test_public_names_stay_importable_from_dicom_series():
    assert dicom_series.ScanError is ScanError
    assert dicom_series.REASONS is scan_checks.REASONS
    assert dicom_series.MONAI_DICOM_READER_ARGS is scan_checks.MONAI_DICOM_READER_ARGS
    for name in dicom_series.__all__:
        assert hasattr(dicom_series, name), name


def test_fail_formats_path_problem_fix_and_rejects_unknown_reasons():
    err = fail(FOLDER, "not_ct", "Modality is 'MR', not CT.", "point to the CT series.")
    assert str(err) == f"{FOLDER}: Modality is 'MR', not CT. Fix: point to the CT series."
    with pytest.raises(ValueError, match="unknown ScanError reason 'bogus'"):
        fail(FOLDER, "bogus", "x", "y")


# ---------------------------------------------------------------------------------------------- folder level


def test_list_slice_files(tmp_path):
    with pytest.raises(ScanError, match="folder does not exist") as info:
        list_slice_files(tmp_path / "nope")
    assert info.value.reason == "not_found"
    (tmp_path / "file.dcm").write_bytes(b"x")
    with pytest.raises(ScanError, match="is not a folder"):
        list_slice_files(tmp_path / "file.dcm")

    folder = tmp_path / "s"
    (folder / "sub").mkdir(parents=True)
    (folder / ".DS_Store").write_bytes(b"x")
    (folder / "dicomdir").write_bytes(b"x")
    with pytest.raises(ScanError, match=r"no DICOM files in the folder \(only sub-folders: sub\)") as info:
        list_slice_files(folder)
    assert info.value.reason == "no_dicom"

    for name in ("b.dcm", "a.dcm"):
        shutil.copy(get_testdata_file("CT_small.dcm"), folder / name)
    with pytest.raises(
        ScanError, match="sub-folder.* sub next to the slice files.*move the sub-folders"
    ) as info:
        list_slice_files(folder)
    assert info.value.reason == "unreadable"

    (folder / "sub").rmdir()
    assert [p.name for p in list_slice_files(folder)] == ["a.dcm", "b.dcm"]  # hidden file, DICOMDIR skipped


@pytest.mark.filterwarnings("ignore:Expected implicit VR")  # pydicom, on the corrupt file
def test_read_series(tmp_path):
    good = Path(shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "a.dcm"))
    series = read_series(tmp_path, [good])
    assert [f for f, _ in series.slices] == [good]
    pixel_data = series.slices[0][1]._dict[0x7FE00010]  # deferred: its length and offset, not its bytes
    assert pixel_data.value is None and pixel_data.length == 128 * 128 * 2

    text = tmp_path / "notes.txt"
    text.write_text("not a dicom file\n")
    with pytest.raises(ScanError, match="notes.txt is not a DICOM file.*remove non-DICOM files") as info:
        read_series(tmp_path, [good, text])
    assert (info.value.reason, info.value.path) == ("unreadable", str(tmp_path))

    corrupt = tmp_path / "corrupt.dcm"
    # Preamble + 'DICM', then a file-meta element with an unknown VR 'ZZ': pydicom raises on it.
    corrupt.write_bytes(good.read_bytes()[:132] + b"\x02\x00\x10\x00ZZ\x04\x00abcd")
    with pytest.raises(ScanError, match=r"corrupt.dcm cannot be parsed \(.*may be truncated"):
        read_series(tmp_path, [corrupt])


# ---------------------------------------------------------------------------------------------- header checks


def test_check_same_series():
    _passes(check_same_series, _series())
    series = _series()
    for k in range(3):
        _set(series, k, "SeriesInstanceUID", "1.2.3.4")
    _raises(
        check_same_series, series, "mixed_series", "2 series", "1.2.3.4 (3 files)", "(9 files)", "own folder"
    )


def test_check_modality():
    _passes(check_modality, _series())
    mr = _header("MR_small.dcm")  # a real MR header, given CT geometry so only the modality is wrong
    _raises(check_modality, _series(base=mr), "not_ct", "'MR'", "not CT", "Hounsfield")
    _raises(check_modality, _set(_series(), 4, "Modality", None), "not_ct", "'CT', missing")


def test_check_not_bone_window_on_pydicoms_real_ct_header():
    assert CT.ConvolutionKernel == "STANDARD" and "WindowCenter" not in CT  # GE soft-tissue kernel
    _passes(check_not_bone_window, _series())
    # Soft-tissue head kernels (Siemens H31s / H45s / Hr40 / J40s) and brain / soft-tissue windows pass.
    for kernel in ("H31s", "H45s", ["Hr40", "3"], "J40s", "SOFT", "FC21"):
        _passes(check_not_bone_window, _set(_series(), 0, "ConvolutionKernel", kernel))
    for center, width in ((40, 80), (35, 90), (80, 300), (40, 400), ([40, 400], [80, 2000])):
        series = _set(_set(_series(), 0, "WindowCenter", center), 0, "WindowWidth", width)
        _passes(check_not_bone_window, series)
    # Malformed window values are no evidence either way.
    _passes(check_not_bone_window, _set(_set(_series(), 0, "WindowCenter", ""), 0, "WindowWidth", 2000))


@pytest.mark.parametrize(
    ("kernel", "pattern"),
    [("BONE", "BONE"), ("BONEPLUS", "BONE"), ("EDGE", "EDGE"), ("H60s", r"^[HJ]r?[6-9]\d")]
    + [("H70h", r"^[HJ]r?[6-9]\d"), (["Hr64", "3"], r"^[HJ]r?[6-9]\d"), ("J70h", r"^[HJ]r?[6-9]\d")],
)
def test_check_not_bone_window_rejects_bone_kernels(kernel, pattern):
    series = _series()
    for k in range(len(series.slices)):
        _set(series, k, "ConvolutionKernel", kernel)
    shown = kernel if isinstance(kernel, str) else "\\".join(kernel)
    _raises(
        check_not_bone_window, series, "bone_window", repr(shown), repr(pattern), "(12 files of 12)", "Fix"
    )
    # The patterns are settings: without kernel patterns the same series passes.
    _passes(check_not_bone_window, series, CheckSettings(bone_kernel_patterns=()))
    # A site's own kernel name, given as a pattern, is caught too.
    custom = _set(_series(), 3, "ConvolutionKernel", "FC30")
    _passes(check_not_bone_window, custom)
    _raises(
        check_not_bone_window,
        custom,
        "bone_window",
        "'FC30'",
        "(1 file of 12)",
        settings=CheckSettings(bone_kernel_patterns=(r"^FC3\d",)),
    )


def test_check_not_bone_window_rejects_bone_display_windows():
    for center, width in ((400, 1800), (500, 2000), ([600, 40], [2800, 80])):
        series = _set(_set(_series(), 0, "WindowCenter", center), 0, "WindowWidth", width)
        _raises(check_not_bone_window, series, "bone_window", "is a bone window", "center >= 250")
        _passes(check_not_bone_window, series, CheckSettings(bone_window=None))
    # The thresholds are settings.
    series = _set(_set(_series(), 0, "WindowCenter", 300), 0, "WindowWidth", 1500)
    _passes(check_not_bone_window, series, CheckSettings(bone_window=(350.0, 1400.0)))
    with pytest.raises(ValueError, match="not a regular expression"):
        CheckSettings(bone_kernel_patterns=("H[6-9",))


def test_validate_series_flags_a_written_series_whose_kernel_is_edited(tmp_path):
    volume = np.zeros((8, 8, 12), np.float32)
    paths = dicom_series.write_dicom_series(volume, (1.0, 1.0, 5.0), tmp_path / "s", patient_id="P1")
    assert dicom_series.validate_series(tmp_path / "s").n_slices == 12  # writer: no kernel, window 35/90
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.ConvolutionKernel = "H70h"
        ds.save_as(path)
    with pytest.raises(ScanError, match="'H70h' matches bone-kernel pattern") as info:
        dicom_series.validate_series(tmp_path / "s")
    assert info.value.reason == "bone_window"
    assert dicom_series.validate_series(tmp_path / "s", bone_kernel_patterns=()).n_slices == 12


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("ImagePositionPatient", None),
        ("ImagePositionPatient", [0.0, 0.0]),  # wrong length
        ("ImageOrientationPatient", None),
        ("PixelSpacing", None),
        ("PixelSpacing", [0.0, 0.5]),  # must be positive
        ("Rows", None),
        ("Columns", None),
    ],
)
def test_check_geometry_present(keyword, value):
    _passes(check_geometry_present, _series())
    series = _set(_series(), 4, keyword, value)
    _raises(
        check_geometry_present, series, "missing_geometry", "IM0004.dcm", keyword, "of 12 files", "re-export"
    )
    # Derived geometry guards itself: it cannot be used on a series that fails this check.
    with pytest.raises(ScanError, match=keyword):
        _ = series.geometry


@pytest.mark.parametrize(
    ("keyword", "value", "found"),
    [
        ("Rows", 64, "Rows x Columns: 128x128 (11 files), 64x128 (1 file)"),
        ("PixelSpacing", [0.9, 0.9], "PixelSpacing: [0.6615, 0.6615] (11 files), [0.9, 0.9] (1 file)"),
        ("ImageOrientationPatient", [1, 0, 0, 0, 0, -1], "ImageOrientationPatient: "),  # a coronal reformat
    ],
)
def test_check_same_size_and_orientation(keyword, value, found):
    _passes(check_same_size_and_orientation, _series())
    series = _set(_series(), 2, keyword, value)
    _raises(check_same_size_and_orientation, series, "inconsistent_size", found, "keep only the axial")


def test_check_same_size_and_orientation_lists_every_difference():
    series = _set(_set(_series(), 2, "Rows", 64), 3, "PixelSpacing", [0.9, 0.9])
    message = _raises(
        check_same_size_and_orientation, series, "inconsistent_size", "Rows x Columns", "PixelSpacing"
    )
    assert "ImageOrientationPatient" not in message


def _with_transfer_syntax(series: SeriesHeaders, k: int, uid: str) -> SeriesHeaders:
    series.slices[k][1].file_meta.TransferSyntaxUID = uid
    return series


def test_check_decodable(monkeypatch):
    from pydicom.pixels.decoders.base import get_decoder

    _passes(check_decodable, _series())  # CT_small.dcm: Explicit VR Little Endian
    _passes(check_decodable, _series(base=_header("MR_small_RLE.dcm")))  # RLE: pydicom's own decoder

    jpeg_ls = _header("JPEGLSNearLossless_16.dcm")  # a real JPEG-LS file's transfer syntax
    uid = str(jpeg_ls.file_meta.TransferSyntaxUID)
    decoder = get_decoder(uid)
    if decoder.is_available:  # e.g. pylibjpeg installed: pretend it is missing
        monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    series = _with_transfer_syntax(_series(), 5, uid)
    _raises(check_decodable, series, "no_decoder", uid, "no decoder for it is installed", "pylibjpeg-libjpeg")

    mpeg2 = _with_transfer_syntax(_series(), 0, "1.2.840.10008.1.2.4.100")
    _raises(check_decodable, mpeg2, "no_decoder", "no decoder at all", "gdcmconv --raw")
    unknown = _with_transfer_syntax(_series(), 0, "1.2.3.4")
    _raises(check_decodable, unknown, "no_decoder", "1.2.3.4 is not a known transfer syntax")


def test_check_no_duplicate_slices():
    _passes(check_no_duplicate_slices, _series())
    series = _series()
    series.slices.append((FOLDER / "resent.dcm", copy.deepcopy(series.slices[5][1])))
    _raises(
        check_no_duplicate_slices,
        series,
        "duplicate_slices",
        "IM0005.dcm and resent.dcm at 25.00 mm",
        "delete",
    )


@pytest.mark.parametrize(
    ("n", "min_slices", "ok"), [(10, 10, True), (9, 10, False), (3, 3, True), (2, 3, False)]
)
def test_check_slice_count(n, min_slices, ok):
    settings = CheckSettings(min_slices=min_slices)
    if ok:
        _passes(check_slice_count, _series(n), settings)
    else:
        _raises(
            check_slice_count,
            _series(n),
            "too_few_slices",
            f"only {n} slices (need at least {min_slices})",
            "Liu et al. 2023",
            "Figure S3a",
            settings=settings,
        )


def test_check_slice_spacing():
    _passes(check_slice_spacing, _series())
    # Positions are measured along the plane normal, so a tilted (gantry-tilt) series is uniform too.
    c, s = np.cos(0.3), np.sin(0.3)
    tilted = _series(normal=(0.0, -s, c))
    for _, ds in tilted.slices:
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, c, s]
    _passes(check_slice_spacing, tilted)
    # A missing slice is a whole multiple of the gap: reported by check_no_missing_slices, not here.
    gap = _series()
    del gap.slices[6]
    _passes(check_slice_spacing, gap)

    stray = _set(_series(), 6, "ImagePositionPatient", [0.0, 0.0, 6 * GAP + 1.5])
    _raises(
        check_slice_spacing,
        stray,
        "inconsistent_spacing",
        "6.50 mm",
        "3.50 mm",
        "IM0005.dcm->IM0006.dcm",
        "resample",
    )
    _passes(check_slice_spacing, stray, CheckSettings(spacing_tolerance=0.4))


def test_check_no_missing_slices():
    _passes(check_no_missing_slices, _series())
    series = _series()
    del series.slices[6]  # z = 30 mm
    _raises(
        check_no_missing_slices,
        series,
        "missing_slices",
        "1 slice(s) missing (spacing 5.00 mm)",
        "between 25.00 and 35.00 mm (IM0005.dcm, IM0007.dcm)",
        "re-export",
    )


def test_classify_gaps():
    gaps = np.array([5.0, 5.2, 10.1, 15.0, 7.5, 4.9])
    assert classify_gaps(gaps, 5.0, 0.1) == ([(2, 1), (3, 2)], [4])
    # A wider tolerance accepts the 7.5 mm gap; whole multiples of the gap still count as missing slices.
    assert classify_gaps(gaps, 5.0, 0.6) == ([(2, 1), (3, 2)], [])


def test_instance_numbers_off_the_positions_are_counted_not_refused():
    """Issue 21 item 2: the series is read in position order; how many slices that moves is counted."""
    assert instance_order_moves(_series()) == 0
    reversed_numbers = _series()
    for k, (_, ds) in enumerate(reversed_numbers.slices):
        ds.InstanceNumber = 12 - k  # numbered head to feet: reading by position moves nothing
    assert instance_order_moves(reversed_numbers) == 0
    swapped = _set(_set(_series(), 1, "InstanceNumber", 6), 5, "InstanceNumber", 2)
    assert instance_order_moves(swapped) == 2
    missing = _set(_series(), 3, "InstanceNumber", None)  # MONAI's own reader would drop this slice
    assert instance_order_moves(missing) > 0
    run_series_checks(swapped, DEFAULTS)
    run_series_checks(missing, DEFAULTS)
    assert count_moves([3, 1, 2]) == 2  # read as 3, 2, 1: one slice stays
    assert count_moves([1, 2, 3]) == count_moves([3, 2, 1]) == 0


def test_position_order_sorts_along_the_slice_normal_whatever_the_file_order():
    normal = (0.0, 0.6, 0.8)  # a tilted gantry: the slice normal is not the z axis
    series = _series(6, normal=normal)
    for _, ds in series.slices:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, -0.6]  # row x column = (0, 0.6, 0.8)
    headers = [ds for _, ds in series.slices]
    shuffled = [headers[i] for i in (4, 0, 5, 2, 1, 3)]
    assert position_order(shuffled) == [1, 4, 3, 5, 0, 2]
    del shuffled[2].ImagePositionPatient
    assert position_order(shuffled) is None  # left to the checks, which refuse it


def test_check_pixel_data_complete_on_pydicoms_truncated_file(tmp_path):
    """pydicom's own MR_truncated.dcm (a real file cut inside its pixel data), and a CT slice cut short."""
    truncated = tmp_path / "MR_truncated.dcm"
    shutil.copy(get_testdata_file("MR_truncated.dcm"), truncated)
    series = read_series(tmp_path, [truncated])
    _raises_at(
        tmp_path, check_pixel_data_complete, series, "truncated", "MR_truncated.dcm is truncated", "re-copy"
    )

    ct = tmp_path / "ct"
    ct.mkdir()
    source = Path(get_testdata_file("CT_small.dcm"))
    cut = ct / "IM0001.dcm"
    cut.write_bytes(source.read_bytes()[:-5000])
    series = read_series(ct, [cut])
    message = _raises_at(ct, check_pixel_data_complete, series, "truncated", "IM0001.dcm is truncated")
    assert "of 32768 bytes" in message  # 128 x 128 x 16 bit
    whole = ct / "IM0002.dcm"
    shutil.copy(source, whole)
    _passes(check_pixel_data_complete, read_series(ct, [whole]))


def test_check_pixel_data_complete_names_a_file_without_pixels(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData  # e.g. a header-only copy, or a presentation state in the folder
    path = tmp_path / "IM0001.dcm"
    ds.save_as(path)
    _raises_at(
        tmp_path,
        check_pixel_data_complete,
        read_series(tmp_path, [path]),
        "no_pixel_data",
        "IM0001.dcm has no Pixel Data",
    )


def test_check_single_frame_names_pydicom_datas_enhanced_ct(tmp_path):
    from pydicom.data import get_testdata_file as get_file

    path = tmp_path / "eCT_Supplemental.dcm"
    shutil.copy(get_file("eCT_Supplemental.dcm"), path)  # a real Enhanced CT file (pydicom-data), 2 frames
    series = read_series(tmp_path, [path])
    _raises_at(
        tmp_path,
        check_single_frame,
        series,
        "multi_frame",
        "eCT_Supplemental.dcm is a multi-frame image (2 frames",
        "dcm2niix",
    )
    _passes(check_single_frame, _series())


def _raises_at(folder: Path, check, series: SeriesHeaders, reason: str, *words: str) -> str:
    with pytest.raises(ScanError) as info:
        check(series, DEFAULTS)
    err = info.value
    assert (err.reason, err.path) == (reason, str(folder)), str(err)
    assert str(err).startswith(f"{folder}: ") and " Fix: " in str(err), str(err)
    for word in words:
        assert word in str(err), f"{word!r} not in: {err}"
    return str(err)
