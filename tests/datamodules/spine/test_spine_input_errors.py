"""Issue 21, items 3 and 5 (spine path): every view image is checked before the first epoch and before
prediction, and each damaged, unreadable, wrongly shaped or missing view ends in one message naming the
views-table row, the session, the view, the file and the fix.

Inputs are damaged copies of the synthetic spine phantoms (16-bit PNGs, as the generator writes them)
and real DICOM files: pydicom's test files and pydicom-data's computed radiograph ``RG1_UNCI.dcm`` /
``RG1_J2KR.dcm`` (MONOCHROME1 CR, 1955 x 1841).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from datamodules.spine.datamodule import (
    SpineDataError,
    SpineXrayDataModule,
    check_session_images,
    pair_views,
)
from datamodules.spine.radiographs import check_radiograph, read_radiograph
from datamodules.synthetic.datasets.spine import write_spine_dataset
from lightning_modules.spine.image_module import SpineResNet
from reportsup import SpineImageClassifier

FINDING = "facet_sclerosis"


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """60 synthetic sessions at 64 px (about 1.5 s), with a machine-labels table built from their
    report truth."""
    root = write_spine_dataset(
        tmp_path_factory.mktemp("spine") / "data", n_sessions=60, image_size=64, dicom_fraction=0.0
    )
    sessions = pd.read_csv(root / "sessions.csv", dtype=str)
    sessions[["report_id"]].assign(**{FINDING: sessions[f"{FINDING}_report"]}).to_csv(
        root / "machine_labels.csv", index=False
    )
    return root


def _damaged(
    phantoms: Path, tmp_path: Path, damage, which: str = "test", view: str = "coronal"
) -> tuple[Path, int, str]:
    """A views table in ``tmp_path`` whose ``view`` image of the first ``which`` session is replaced by
    ``damage(original bytes, new path)``; returns the table, the row number (header = 1) and session."""
    views = pd.read_csv(phantoms / "views.csv", dtype=str)
    session = pd.read_csv(phantoms / f"{which}_labels.csv", dtype=str)["session_id"].iloc[0]
    i = int(np.flatnonzero(((views["session_id"] == session) & (views["view"] == view)).to_numpy())[0])
    original = Path(views.loc[i, "image"])
    bad = tmp_path / f"damaged_{original.stem}{original.suffix}"
    written = damage(original.read_bytes(), bad)
    views.loc[i, "image"] = str(written if isinstance(written, Path) else bad)
    views.to_csv(tmp_path / "views.csv", index=False)
    return tmp_path / "views.csv", i + 2, session


def _datamodule(phantoms: Path, views: Path, **kwargs) -> SpineXrayDataModule:
    return SpineXrayDataModule(
        views=str(views),
        labels=[FINDING],
        machine_labels=str(phantoms / "machine_labels.csv"),
        test_labels=str(phantoms / "test_labels.csv"),
        refinement_labels=str(phantoms / "refinement_labels.csv"),
        nlp_reports=str(phantoms / "reports_annotated.csv"),
        image_size=(32, 32),
        split={"seed": 0, "val_fraction": 0.2},
        **kwargs,
    )


def _truncate(data: bytes, path: Path) -> None:
    path.write_bytes(data[: len(data) // 2])


def _header_only(data: bytes, path: Path) -> None:
    path.write_bytes(data[:33])  # the PNG signature and its IHDR chunk, no image data


def _text(data: bytes, path: Path) -> None:
    path.write_text("session_id,view,image\nS1,coronal,S1_ap.png\n")


def _blank(data: bytes, path: Path) -> None:
    Image.fromarray(np.full((64, 64), 1000, np.uint16)).save(path)


CASES = {
    "truncated PNG": (_truncate, r"damaged or truncated PNG file \(Truncated File Read\)\. Fix: re-export"),
    "PNG header only": (
        _header_only,
        r"a PNG file cut short: 33 bytes, not even its whole header\. Fix: re-export",
    ),
    "text file named .png": (
        _text,
        r"not an image: a text file \(begins b'session_id,v'\).* Fix: point the views table at the radiograph",
    ),
    "blank export": (_blank, r"every pixel has the same value .*a blank export\. Fix: .*remove the session"),
    "empty file": (
        lambda data, path: path.write_bytes(b""),
        r"the file is empty \(0 bytes\)\. Fix: re-export",
    ),
    "missing file": (
        lambda data, path: None,
        r"file not found\. Fix: correct the image path in the views table",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_setup_names_row_session_file_and_fix_before_the_first_epoch(phantoms, tmp_path, case):
    damage, expected = CASES[case]
    views, row, session = _damaged(phantoms, tmp_path, damage)
    data = _datamodule(phantoms, views)
    with pytest.raises(SpineDataError) as err:
        data.setup("fit")  # setup: before any epoch, so no training is lost to a bad file
    message = str(err.value)
    assert message.startswith(f"{views}: 1 of ")
    bad_file = str(tmp_path / f"damaged_{session}_coronal.png")
    assert f"row {row} (session {session}, coronal view) {bad_file}: " in message, message
    assert re.search(expected, message), message
    assert data.datasets == {}  # a retried setup() checks again instead of finding datasets ready


def test_every_bad_file_is_listed_at_once_with_its_row(phantoms, tmp_path):
    views, row, session = _damaged(phantoms, tmp_path, _truncate)
    table = pd.read_csv(views, dtype=str)
    refinement = pd.read_csv(phantoms / "refinement_labels.csv", dtype=str)["session_id"].iloc[0]
    j = int(
        np.flatnonzero(((table["session_id"] == refinement) & (table["view"] == "sagittal")).to_numpy())[0]
    )
    table.loc[j, "image"] = str(tmp_path / "nowhere.png")
    table.to_csv(views, index=False)
    with pytest.raises(SpineDataError) as err:
        _datamodule(phantoms, views).setup("fit")
    message = str(err.value)
    assert ": 2 of " in message
    assert f"row {row} (session {session}, coronal view)" in message
    assert (
        f"row {j + 2} (session {refinement}, sagittal view) {tmp_path / 'nowhere.png'}: file not found"
        in message
    )


def test_intact_phantoms_pass_and_header_mode_skips_the_decode(phantoms, tmp_path):
    data = _datamodule(phantoms, phantoms / "views.csv")
    data.setup("fit")
    assert len(data.datasets["train"]) > 0 and data.datasets["train"].views(0).shape == (2, 32, 32)
    # a blank export is only seen by decoding: header mode lets it through to training, decode does not
    views, _, _ = _damaged(phantoms, tmp_path, _blank)
    _datamodule(phantoms, views, check_images="header").setup("fit")
    with pytest.raises(SpineDataError, match="choose one of"):
        _datamodule(phantoms, views, check_images="fast")


def test_a_file_damaged_after_setup_still_names_its_row(phantoms, tmp_path):
    views, row, session = _damaged(phantoms, tmp_path, lambda data, path: path.write_bytes(data))
    data = _datamodule(phantoms, views)
    data.setup("fit")
    _truncate(
        (tmp_path / f"damaged_{session}_coronal.png").read_bytes(),
        tmp_path / f"damaged_{session}_coronal.png",
    )
    with pytest.raises(
        SpineDataError, match=rf"views-table row {row}, session {session} \(coronal view\): .*truncated"
    ):
        data.datasets["image_test"].views(0)


def test_one_file_as_both_views_is_a_table_error(phantoms, tmp_path):
    table = pd.read_csv(phantoms / "views.csv", dtype=str)
    table.loc[1, "image"] = table.loc[0, "image"]
    with pytest.raises(
        SpineDataError,
        match=r"session \S+ \(rows 2, 3\) gives the same file as its coronal and its sagittal view",
    ):
        pair_views(table, tmp_path / "views.csv")


# -- accepted inputs the pipeline converts -------------------------------------------------------------
def test_rgb_16bit_and_real_radiographs_are_accepted(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(rng.integers(0, 4096, (40, 30), dtype=np.uint16)).save(tmp_path / "grey16.png")
    for path in (tmp_path / "rgb.png", tmp_path / "grey16.png", get_testdata_file("RG1_UNCI.dcm")):
        assert check_radiograph(path) is None
        grey = read_radiograph(path)
        assert grey.ndim == 2 and 0 <= grey.min() < grey.max() <= 1


# -- single files: real DICOM and formats the pipeline cannot use ---------------------------------------
def _cut(name: str, tmp_path: Path, fraction: float = 0.6) -> Path:
    source = Path(get_testdata_file(name))
    out = tmp_path / f"cut_{name}"
    out.write_bytes(source.read_bytes()[: int(source.stat().st_size * fraction)])
    return out


def _two_frame_tiff(tmp_path: Path) -> Path:
    frames = [Image.fromarray(np.full((20, 20), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "two.tiff", save_all=True, append_images=frames[1:])
    return tmp_path / "two.tiff"


def _nan_tiff(tmp_path: Path) -> Path:
    a = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    a[3, 4] = np.nan
    Image.fromarray(a).save(tmp_path / "nan.tiff")
    return tmp_path / "nan.tiff"


FILES = {
    "truncated uncompressed CR (pydicom-data RG1_UNCI)": (
        lambda t: _cut("RG1_UNCI.dcm", t),
        "truncated",
        r"truncated DICOM: \d+ bytes of pixel data where 1955 x 1841 x 16 bits need 7198310\. Fix: re-export",
    ),
    "truncated JPEG 2000 CR (pydicom-data RG1_J2KR)": (
        lambda t: _cut("RG1_J2KR.dcm", t),
        "truncated",
        r"truncated DICOM: End of file reached before delimiter .*\. Fix: re-export",
    ),
    "SR object (pydicom test-SR)": (
        lambda t: Path(get_testdata_file("test-SR.dcm")),
        "no_pixels",
        r"a DICOM SR object without pixel data .* Fix: point the views table at the image object",
    ),
    "multi-frame MR (pydicom emri_small)": (
        lambda t: Path(get_testdata_file("emri_small.dcm")),
        "shape",
        r"10 frames in one DICOM file; a view is one radiograph\. Fix: ",
    ),
    "RGB secondary capture (pydicom SC_rgb)": (
        lambda t: Path(get_testdata_file("SC_rgb.dcm")),
        "mode",
        r"a colour DICOM \(RGB, 3 samples per pixel\).* Fix: export the view as a MONOCHROME1/MONOCHROME2 DICOM",
    ),
    "DICOM without its preamble (pydicom no_meta)": (
        lambda t: Path(get_testdata_file("no_meta.dcm")),
        "unreadable",
        r"the DICOM header cannot be read \(InvalidDicomError: .*\)\. Fix: re-export",
    ),
    "two-page TIFF": (
        _two_frame_tiff,
        "shape",
        r"2 frames in one file; a view is one radiograph\. Fix: save each",
    ),
    "float TIFF with NaN": (
        _nan_tiff,
        "not_finite",
        r"holds NaN or infinite pixel values\. Fix: re-export the view with integer pixels",
    ),
}


@pytest.mark.parametrize("case", list(FILES))
def test_each_unusable_file_has_its_reason_and_fix(tmp_path, case):
    make, reason, expected = FILES[case]
    problem = check_radiograph(make(tmp_path))
    assert problem is not None and problem.reason == reason
    assert re.search(expected, str(problem)), str(problem)


def test_header_mode_reads_no_pixels_but_finds_a_cut_png(tmp_path, phantoms):
    png = next((phantoms / "images").glob("*.png"))
    _truncate(png.read_bytes(), tmp_path / "cut.png")
    assert check_radiograph(tmp_path / "cut.png", decode=False).reason == "truncated"
    assert check_radiograph(png, decode=False) is None


def test_a_cut_jpeg_is_found_only_by_decoding(tmp_path):
    """JPEG has no chunk checksums: only the decode (the default data.check_images) sees the missing end."""
    pixels = (np.random.default_rng(0).random((300, 200)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "view.jpg")
    _truncate((tmp_path / "view.jpg").read_bytes(), tmp_path / "cut.jpg")
    assert check_radiograph(tmp_path / "cut.jpg", decode=False) is None
    problem = check_radiograph(tmp_path / "cut.jpg")
    assert problem.reason == "unreadable" and "image file is truncated" in str(problem), str(problem)


# -- prediction: the same check before the first batch ------------------------------------------------
def test_prediction_checks_every_view_first(phantoms, tmp_path):
    views, row, session = _damaged(phantoms, tmp_path, _header_only)
    model = SpineResNet([FINDING], torch.optim.SGD, weights=None)
    classifier = SpineImageClassifier(model, (32, 32))
    with pytest.raises(
        SpineDataError, match=rf"row {row} \(session {session}, coronal view\) .*a PNG file cut short"
    ):
        classifier.predict(views)
    table = pd.read_csv(views, dtype=str)
    sessions = pair_views(table, views)
    with pytest.raises(SpineDataError, match=rf"row {row} \(session {session}, coronal view\)"):
        check_session_images(sessions, views, decode=False)
    shutil.copy(phantoms / "views.csv", tmp_path / "intact.csv")
    intact = pd.read_csv(tmp_path / "intact.csv", dtype=str).head(4)
    out = classifier.predict(intact)
    assert len(out) == 2 and out[f"{FINDING}_prob"].between(0, 1).all()


def test_a_header_only_views_table_is_named(phantoms, tmp_path):
    views = tmp_path / "views.csv.gz"  # gzip-compressed tables are read like plain ones (issue 21, item 7)
    pd.read_csv(phantoms / "views.csv").head(0).to_csv(views, index=False)
    with pytest.raises(
        SpineDataError,
        match=re.escape(
            f"{views}: the table has a header (session_id, patient_id, report_id, view, image) but no rows. Add its rows or point data.views at the table you meant."
        ),
    ):
        _datamodule(phantoms, views).setup("fit")
