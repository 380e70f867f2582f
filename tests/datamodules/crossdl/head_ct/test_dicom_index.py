"""dicom_index: walking a raw DICOM export, grouping by series, Cross-DL's rules, link folders (issue 21 item 1).

Real files where they exist (pydicom's ``dicomdirtests`` export: CR, MR, a CT scout, header-only CT copies,
DICOMDIR files; pydicom-data's enhanced CT), small written series otherwise."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pydicom.data
import pytest
from pydicom.data import get_testdata_file

from datamodules.crossdl.head_ct.dicom_index import (
    SKIP_REASONS,
    ManifestRules,
    assign_images,
    index_dicom_tree,
    make_scan_id,
    study_datetime,
)
from datamodules.crossdl.head_ct.dicom_series import validate_series, write_dicom_series
from datamodules.crossdl.head_ct.scan_checks import list_slice_files
from datamodules.synthetic.datasets.mixed_export import write_mixed_export

DICOMDIR_TESTS = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests"


def _series(folder: Path, n: int = 12, patient: str = "P1", **tags) -> list[Path]:
    """A small CT series (16 x 16 x n, 5 mm slices) with header ``tags`` set; file paths in slice order."""
    volume = np.full((16, 16, n), 40.0, np.float32)
    files = write_dicom_series(volume, (1.0, 1.0, 5.0), folder, patient_id=patient, seed_uid=f"{folder}")
    for f in files:
        ds = pydicom.dcmread(f)
        for keyword, value in tags.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(f)
    return files


def _reasons(result) -> list[str]:
    return sorted(result.skipped["reason"])


def _accounted(result) -> int:
    """Files in kept series plus files in skipped rows."""
    return int(result.kept["n_slices"].sum() + result.skipped["n_files"].sum())


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "export"
    truth = write_mixed_export(root)
    return root, truth


def test_mixed_export_every_series_has_the_truth_tables_outcome(mixed):
    root, truth = mixed
    result = index_dicom_tree(root, progress=False)
    assert result.n_files == _accounted(result) == int(truth["n_files"].sum())
    kept_truth = truth[truth["expected"] == "kept"]
    assert sorted(result.kept["series_instance_uid"]) == sorted(kept_truth["series_instance_uid"])
    series_rows = result.skipped[result.skipped["series_instance_uid"] != ""].set_index("series_instance_uid")
    file_rows = result.skipped[result.skipped["series_instance_uid"] == ""]
    for row in truth[truth["expected"] == "skipped"].itertuples():
        if row.series_instance_uid:
            assert series_rows.loc[row.series_instance_uid, "reason"] == row.reason, row.description
            assert str(root / row.path) in series_rows.loc[row.series_instance_uid, "message"]
        else:
            match = file_rows[file_rows["example_file"] == str(root / row.path)]
            assert match["reason"].tolist() == [row.reason], row.description
    # Study-level columns come from the headers; ids are stable and usable as folder names.
    first = result.kept.set_index("accession_number").loc["ACC1001"]
    assert (first["patient_id"], first["study_date"], first["study_datetime"]) == (
        "MIXP001",
        "20230101",
        "2023-01-01T09:30:00",
    )
    assert first["convolution_kernel"] == "H31s" and first["n_slices"] == 30
    assert first["slice_thickness"] == 5.0
    again = index_dicom_tree(root, progress=False)
    assert again.kept["scan_id"].tolist() == result.kept["scan_id"].tolist()
    assert result.kept["scan_id"].str.fullmatch(r"[A-Za-z0-9._-]+").all()


def test_worker_processes_give_the_same_tables(mixed, monkeypatch):
    """Headers read in 2 processes (chunks of 16 files here, so several chunks run) give the same tables."""
    import datamodules.crossdl.head_ct.dicom_index as dicom_index

    root, _ = mixed
    one = index_dicom_tree(root, progress=False)
    monkeypatch.setattr(dicom_index, "_CHUNK", 16)
    two = index_dicom_tree(root, progress=False, workers=2)
    pd.testing.assert_frame_equal(one.kept, two.kept)
    pd.testing.assert_frame_equal(one.skipped, two.skipped)


def test_mixed_export_images_hold_exactly_their_series(mixed, tmp_path):
    root, truth = mixed
    result = index_dicom_tree(root, progress=False)
    kept = assign_images(result, tmp_path / "series")
    by_uid = kept.set_index("series_instance_uid")
    shuffled = truth[truth["description"].str.contains("shuffled")].iloc[0]
    row = by_uid.loc[shuffled.series_instance_uid]
    # The shuffled series shares its folder with the sagittal reformat: it gets a folder of links.
    assert row["image_source"] == "symlink"
    assert Path(row["image"]) == tmp_path / "series" / row["scan_id"]
    links = list_slice_files(Path(row["image"]))
    assert len(links) == 30 and all(p.is_symlink() and p.name.startswith("A_") for p in links)
    assert {p.resolve().parent for p in links} == {(root / shuffled.path).resolve()}
    for other in kept[kept["image_source"] == "folder"].itertuples():
        assert len(list_slice_files(Path(other.image))) == other.n_slices
    # The link folder passes the header checks; the InstanceNumbers really are shuffled.
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in links]
    by_position = [
        int(h.InstanceNumber) for h in sorted(headers, key=lambda h: float(h.ImagePositionPatient[2]))
    ]
    assert by_position != sorted(by_position) and by_position != sorted(by_position, reverse=True)
    assert validate_series(row["image"]).n_slices == 30


def test_real_pydicom_export_every_file_is_accounted_for():
    """pydicom's own test export: CR radiographs, MR series (three in one folder), a real CT scout, short CT
    series, header-only CT copies, seven DICOMDIRs and READMEs; nothing is a usable head CT."""
    result = index_dicom_tree(DICOMDIR_TESTS, progress=False)
    assert result.kept.empty
    assert result.n_files == _accounted(result) == 91
    by_folder = {
        (Path(r.folder).relative_to(DICOMDIR_TESTS).as_posix(), r.reason) for r in result.skipped.itertuples()
    }
    assert ("98892001/CT2N", "localizer") in by_folder  # a real scout, ImageType LOCALIZER
    assert ("77654033/CT2", "too_few_slices") in by_folder
    assert ("77654033/CR1", "not_ct") in by_folder
    assert ("TINY_ALPHA/PT000000/ST000000/SE000000", "non_image") in by_folder  # CT storage without pixels
    assert (".", "dicomdir") in by_folder and ("TINY_ALPHA", "not_dicom") in by_folder
    mr2 = result.skipped[result.skipped["folder"].str.endswith("98892003/MR2")]
    assert len(mr2) == 3 and set(mr2["reason"]) == {"not_ct"}  # one folder, three series, three rows
    dicomdirs = result.skipped[
        (result.skipped["reason"] == "dicomdir") & (result.skipped["folder"] == str(DICOMDIR_TESTS))
    ]
    assert dicomdirs["n_files"].tolist() == [7]  # DICOMDIR-bigEnd etc. are known by their SOP class
    non_image = result.skipped.set_index("reason").loc["non_image", "message"]
    assert "CT Image Storage objects without an image (50 of 50 files have no Rows" in non_image


def test_real_short_ct_series_is_kept_when_min_slices_allows_it():
    """The real five-slice 2.5 mm axial CT (98892001/CT5N) passes every rule once min_slices is 5; its folder
    holds only it, so it is its own image (nothing is written into the export)."""
    result = index_dicom_tree(DICOMDIR_TESTS, ManifestRules(min_slices=5), progress=False)
    assert result.kept["n_slices"].tolist() == [5]
    kept = assign_images(result, Path("/nonexistent/never-written"))
    assert kept["image"].tolist() == [str(DICOMDIR_TESTS / "98892001" / "CT5N")]
    assert kept["image_source"].tolist() == ["folder"]
    assert kept["slice_thickness"].tolist() == [2.5]


def test_multi_frame_real_enhanced_ct():
    """pydicom-data's enhanced (multi-frame) CT: one file holds every frame; the head-CT reader cannot stack it."""
    path = Path(get_testdata_file("eCT_Supplemental.dcm"))
    root = path.parent
    result = index_dicom_tree(root, ManifestRules(min_slices=1), exclude=[], progress=False)
    row = result.skipped[result.skipped["example_file"] == str(path)].iloc[0]
    assert row["reason"] == "multi_frame"
    assert "a file holds 2 frames" in row["message"] and "dcm2niix" in row["message"]


@pytest.mark.parametrize(
    "tags, reason, words",
    [
        ({"SeriesInstanceUID": None}, "no_series_uid", "without SeriesInstanceUID"),
        ({"ImageOrientationPatient": None}, "missing_geometry", "no valid ImageOrientationPatient"),
        ({"PatientID": ""}, "no_patient_id", "PatientID is empty"),
        ({"WindowCenter": 500, "WindowWidth": 2000}, "bone_window", "window 500/2000"),
        ({"ConvolutionKernel": "BONEPLUS"}, "bone_window", "'BONEPLUS' matches"),
        ({"Modality": "PT"}, "not_ct", "Modality is PT (12)"),
        ({"SliceThickness": 8.0}, "slice_thickness", "8 mm is outside 2-6 mm"),
        ({"ImageOrientationPatient": [1, 0, 0, 0, 0, -1]}, "not_axial", "90 degrees"),
    ],
)
def test_each_rule_names_its_reason(tmp_path, tags, reason, words):
    _series(tmp_path / "export" / "s1", **tags)
    result = index_dicom_tree(tmp_path / "export", progress=False)
    assert result.kept.empty
    assert _reasons(result) == [reason]
    message = result.skipped["message"].iloc[0]
    assert words in message and "Fix:" in message and str(tmp_path / "export" / "s1") in message


def test_rules_are_options(tmp_path):
    export = tmp_path / "export"
    _series(export / "bone", ConvolutionKernel="H70h", SeriesDescription="Head 4.8 H70h")
    _series(export / "tilted", ImageOrientationPatient=[1, 0, 0, 0, 0.9397, -0.3420])  # 20 degree tilt
    _series(export / "other", SeriesDescription="CHEST")
    result = index_dicom_tree(export, progress=False)
    assert sorted(result.kept["source_folders"]) == [str(export / "other"), str(export / "tilted")]
    # No kernel patterns: the H70h series is kept; a description list skips the chest series.
    result = index_dicom_tree(
        export,
        ManifestRules(bone_kernel_patterns=(), series_descriptions=("Head 4.8 H70h", "HEAD 5mm")),
        progress=False,
    )
    assert sorted(Path(f).name for f in result.kept["source_folders"]) == ["bone", "tilted"]
    assert _reasons(result) == ["series_description"]
    assert "SeriesDescription 'CHEST' is not one of the 2 given" in result.skipped["message"].iloc[0]
    result = index_dicom_tree(export, ManifestRules(max_tilt_degrees=10), progress=False)
    assert "not_axial" in _reasons(result)


def test_duplicate_instances_name_both_files(tmp_path):
    export = tmp_path / "export"
    files = _series(export / "a")
    (export / "copy").mkdir()
    shutil.copy(files[3], export / "copy" / files[3].name)
    result = index_dicom_tree(export, progress=False)
    assert _reasons(result) == ["duplicate_instances"]
    message = result.skipped["message"].iloc[0]
    assert str(export / "copy" / files[3].name) in message and str(files[3]) in message


def test_series_over_two_folders_with_clashing_names_gets_unique_links(tmp_path):
    export = tmp_path / "export"
    files = _series(export / "part1", n=12)
    (export / "part2").mkdir()
    # Half the slices move to part2 under the names the other half keeps in part1 (IM0000.dcm twice ...).
    for f, name in zip(files[6:], sorted(f.name for f in files[:6]), strict=True):
        f.rename(export / "part2" / name)
    result = index_dicom_tree(export, progress=False)
    kept = assign_images(result, tmp_path / "out" / "series", mode="copy")
    assert kept["image_source"].tolist() == ["copy"]
    image = Path(kept["image"].iloc[0])
    copies = list_slice_files(image)
    assert len(copies) == 12 and not any(p.is_symlink() for p in copies)
    assert validate_series(image).n_slices == 12
    with pytest.raises(FileExistsError):  # an existing folder is never written into
        assign_images(result, tmp_path / "out" / "series", mode="copy")


def test_link_folder_inside_the_export_is_not_indexed(tmp_path):
    export = tmp_path / "export"
    _series(export / "flat", n=12, patient="P1")
    _series(export / "flat_b", n=12, patient="P2")
    for f in (export / "flat_b").iterdir():
        f.rename(export / "flat" / f"B_{f.name}")
    first = index_dicom_tree(export, progress=False)
    assign_images(first, export / "series")
    again = index_dicom_tree(export, exclude=[export / "series"], progress=False)
    assert again.skipped.empty and len(again.kept) == 2


def test_broken_links_and_unlisted_folders_are_reported(tmp_path, monkeypatch):
    """Nothing is left out silently: a broken link and a folder that cannot be listed (os.scandir raising
    PermissionError, as for a folder without read permission; tests run as root, so chmod would not do)."""
    export = tmp_path / "export"
    _series(export / "ok")
    (export / "ok" / "gone.dcm").symlink_to(tmp_path / "nowhere.dcm")
    (export / "locked").mkdir()
    (export / "locked" / "IM1.dcm").write_bytes(b"")
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == export / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = index_dicom_tree(export, progress=False)
    assert result.n_files == _accounted(result) == 14
    rows = result.skipped.set_index("example_file")
    assert rows.loc[str(export / "ok" / "gone.dcm"), "reason"] == "unreadable"
    assert "a broken symbolic link" in rows.loc[str(export / "ok" / "gone.dcm"), "message"]
    assert (
        "folder cannot be listed (PermissionError: Permission denied)"
        in rows.loc[str(export / "locked"), "message"]
    )
    # the broken link shares the series' folder, so the kept series gets a link folder without it
    kept = assign_images(result, tmp_path / "series")
    assert (
        kept["image_source"].tolist() == ["symlink"] and len(list_slice_files(Path(kept["image"][0]))) == 12
    )


def test_linked_folders_are_followed_once(tmp_path):
    """An export assembled from links: a linked series folder is read, a link back up the tree neither loops
    nor reads a file twice."""
    _series(tmp_path / "elsewhere" / "s1")
    export = tmp_path / "export"
    _series(export / "s2", patient="P2")
    (export / "linked").symlink_to(tmp_path / "elsewhere" / "s1", target_is_directory=True)
    (export / "s2" / "loop").symlink_to(export, target_is_directory=True)
    result = index_dicom_tree(export, progress=False)
    assert result.skipped.empty and len(result.kept) == 2 and result.n_files == 24


def test_scan_id_and_study_datetime():
    ds = pydicom.Dataset()
    ds.PatientID, ds.StudyDate, ds.StudyTime, ds.SeriesNumber = "ab/c 1", "20230102", "0930", 3
    from datamodules.crossdl.head_ct.dicom_index import SeriesFiles

    series = SeriesFiles("1.2.3", [(Path("x"), ds)])
    assert make_scan_id(series).startswith("ab-c-1_20230102_s3_")
    assert study_datetime(ds) == "2023-01-02T09:30:00"
    ds.StudyDate = ""
    assert study_datetime(ds) == ""


def test_bad_rules_are_named():
    with pytest.raises(ValueError, match="need 0 <= low <= high"):
        ManifestRules(slice_thickness_mm=(6, 2))
    with pytest.raises(ValueError, match="not a regular expression"):
        ManifestRules(bone_kernel_patterns=("H[6-9",))
    with pytest.raises(ValueError, match="max_tilt_degrees"):
        ManifestRules(max_tilt_degrees=120)


def test_every_skip_reason_is_exercised():
    """The reasons this file and the mixed export test, so a new reason needs a new test."""
    tested = {
        "not_dicom", "unreadable", "dicomdir", "no_series_uid", "non_image", "not_ct", "localizer",
        "multi_frame", "missing_geometry", "not_axial", "too_few_slices", "slice_thickness", "bone_window",
        "series_description", "duplicate_instances", "no_patient_id",
    }  # fmt: skip
    assert tested == set(SKIP_REASONS)
