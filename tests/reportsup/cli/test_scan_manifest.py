"""reportsup-scan-manifest on a mixed export: every series accounted for, the manifest feeds
reportsup-check-scans and reportsup-pair-reports unchanged, and every user error is one message (issue 21 item 1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from datamodules.crossdl.head_ct.manifest import read_scan_manifest
from datamodules.synthetic.datasets.mixed_export import write_mixed_export
from reportsup.cli import check_scans, pair_reports, scan_manifest


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export") / "pacs"
    return root, write_mixed_export(root, reports_path=root.parent / "reports.csv")


def _run(root: Path, out: Path, *extra: str) -> None:
    scan_manifest.main([str(root), "--out", str(out), "--no-progress", *extra])


def test_mixed_export_to_manifest_to_check_scans(export, tmp_path, capsys):
    root, truth = export
    out = tmp_path / "work" / "manifest.csv"
    _run(root, out)
    printed = capsys.readouterr().out
    assert (
        "files: 170 (" in printed
        and "files/s), series kept: 3 (1 through series/ symlink folders)" in printed
    )
    manifest = pd.read_csv(out, dtype=str, keep_default_na=False)
    skipped = pd.read_csv(tmp_path / "work" / "skipped_series.csv", dtype=str, keep_default_na=False)
    # Every series and file of the export is in exactly one table, with the truth table's outcome.
    kept_truth = truth[truth["expected"] == "kept"]
    assert sorted(manifest["series_instance_uid"]) == sorted(kept_truth["series_instance_uid"])
    reasons = dict(
        zip(
            skipped["series_instance_uid"].where(
                skipped["series_instance_uid"] != "", skipped["example_file"]
            ),
            skipped["reason"],
            strict=True,
        )
    )
    for row in truth[truth["expected"] == "skipped"].itertuples():
        assert reasons[row.series_instance_uid or str(root / row.path)] == row.reason
    assert len(skipped) == (truth["expected"] == "skipped").sum()
    assert manifest["n_slices"].astype(int).sum() + skipped["n_files"].astype(int).sum() == 170
    # The manifest is what the head-CT tools read; the shuffled series (links) passes the checks too.
    assert read_scan_manifest(out)[["scan_id", "patient_id", "image"]].shape == (3, 3)
    linked = manifest[manifest["image_source"] == "symlink"]
    assert linked["image"].tolist() == [str(tmp_path / "work" / "series" / linked["scan_id"].iloc[0])]
    # --decode: the pixels are read through the link folder too (MONAI's reader follows the links).
    check_scans.main([str(out), "--out-dir", str(tmp_path / "checked"), "--decode"])
    checked = pd.read_csv(tmp_path / "checked" / "checked_manifest.csv", dtype=str)
    quarantine = pd.read_csv(tmp_path / "checked" / "quarantine.csv")
    assert quarantine.empty, quarantine["message"].tolist()
    # the shuffled series is kept and read in position order (issue 21 item 2, reported by check-scans)
    shuffled = manifest.set_index("series_instance_uid").loc[
        truth[truth["description"].str.contains("shuffled")]["series_instance_uid"].iloc[0], "scan_id"
    ]
    assert shuffled in capsys.readouterr().out
    assert sorted(checked["scan_id"]) == sorted(manifest["scan_id"])
    assert "accession_number" in checked.columns  # extra columns travel through unchanged


def test_manifest_pairs_with_reports_and_checks_with_labels(export, tmp_path):
    """study_datetime is what reportsup-pair-reports reads by default: the export's reports (one hour after
    each study) pair with the kept series, and the paired manifest passes reportsup-check-scans --labels."""
    root, _ = export
    out = tmp_path / "manifest.csv"
    _run(root, out)
    reports = root.parent / "reports.csv"
    pair_reports.main([str(out), str(reports), "--out-dir", str(tmp_path / "paired")])
    paired = pd.read_csv(tmp_path / "paired" / "paired_manifest.csv", dtype=str)
    assert sorted(paired["report_id"]) == ["MIXR001", "MIXR002", "MIXR003"]
    assert paired["hours_apart"].astype(float).tolist() == [1.0, 1.0, 1.0]
    # the accession numbers agree too: a join by id gives the same pairs
    by_accession = pd.read_csv(reports, dtype=str).set_index("accession_number")["report_id"]
    assert (paired["accession_number"].map(by_accession) == paired["report_id"]).all()
    check_scans.main(
        [
            str(tmp_path / "paired" / "paired_manifest.csv"),
            "--out-dir",
            str(tmp_path / "checked"),
            "--labels",
            str(reports),
        ]
    )
    assert pd.read_csv(tmp_path / "checked" / "quarantine.csv").empty
    assert len(pd.read_csv(tmp_path / "checked" / "checked_manifest.csv")) == 3


def test_existing_outputs_are_refused_unless_overwrite(export, tmp_path, capsys):
    root, _ = export
    out = tmp_path / "manifest.csv"
    _run(root, out)
    before = out.read_text()
    with pytest.raises(SystemExit, match=r"manifest.csv exists; choose another --out, or give --overwrite"):
        _run(root, out)
    with pytest.raises(SystemExit, match=r"skipped_series.csv exists"):
        _run(root, tmp_path / "other.csv")  # another manifest name, same folder
    out.unlink()
    (tmp_path / "skipped_series.csv").unlink()  # both tables gone, the link folder still there
    with pytest.raises(SystemExit, match=r"series/MIXP001_20230315_s2_\w+ exists"):
        _run(root, out)
    _run(root, out, "--overwrite")
    assert out.read_text() == before


def test_copy_mode_and_manifest_inside_the_export(export, tmp_path):
    """--link-mode copy writes real files; a manifest inside DICOM_ROOT does not index its own series/ folder
    on the next run (no duplicate_instances)."""
    root, _ = export
    own = tmp_path / "pacs"
    shutil.copytree(root, own)
    out = own / "manifest.parquet"
    _run(own, out, "--link-mode", "copy")
    manifest = pd.read_parquet(out)
    linked = manifest[manifest["image_source"] == "copy"]
    files = list(Path(linked["image"].iloc[0]).iterdir())
    assert len(files) == 30 and not any(f.is_symlink() for f in files)
    _run(own, out, "--link-mode", "copy", "--overwrite")
    assert pd.read_parquet(out)["scan_id"].tolist() == manifest["scan_id"].tolist()
    skipped = pd.read_csv(own / "skipped_series.csv")
    assert "duplicate_instances" not in set(skipped["reason"])
    # the manifest and skipped_series.csv of the first run are not listed as non-DICOM files of the export
    assert len(skipped) == 10 and skipped.set_index("reason").loc["not_dicom", "n_files"] == 1


def test_a_users_series_folder_is_neither_skipped_nor_written_into(export, tmp_path):
    """A folder named series/ inside the export is data: walked, and not used for links."""
    root, _ = export
    own = tmp_path / "pacs"
    shutil.copytree(root, own)
    (own / "MIXP002" / "CT" / "HEAD").rename(own / "series")
    with pytest.raises(
        SystemExit, match=r"pacs/series exists and was not made by reportsup-scan-manifest; 1 "
    ):
        _run(own, own / "manifest.csv")
    _run(own, tmp_path / "elsewhere" / "manifest.csv")
    manifest = pd.read_csv(tmp_path / "elsewhere" / "manifest.csv", dtype=str)
    assert str(own / "series") in set(manifest["image"])


def test_parquet_manifest_of_a_series_without_thickness(tmp_path):
    """A one-slice series without SliceThickness (kept with --min-slices 1) has no thickness: the Parquet
    column stays numeric (NaN), and the manifest reads back."""
    import numpy as np
    import pydicom

    from datamodules.crossdl.head_ct.dicom_series import write_dicom_series

    files = write_dicom_series(
        np.zeros((8, 8, 1), np.float32), (1, 1, 5), tmp_path / "pacs" / "s", patient_id="P"
    )
    ds = pydicom.dcmread(files[0])
    del ds.SliceThickness
    ds.save_as(files[0])
    out = tmp_path / "m.parquet"
    _run(tmp_path / "pacs", out, "--min-slices", "1")
    manifest = read_scan_manifest(out)
    assert len(manifest) == 1 and pd.isna(manifest["slice_thickness"].iloc[0])


def test_options_change_the_rules(export, tmp_path):
    root, _ = export
    out = tmp_path / "manifest.csv"
    _run(
        root, out, "--min-slices", "1", "--slice-thickness", "0.5", "6", "--bone-kernels", "--no-bone-window"
    )
    manifest = pd.read_csv(out, dtype=str)
    descriptions = sorted(manifest["series_description"].fillna(""))
    # The bone reconstruction, the 1 mm series and the real one-slice CT are kept under these rules.
    assert len(manifest) == 6 and "HEAD 5mm BONE" in descriptions and "HEAD 1mm" in descriptions


def test_user_errors_are_one_message(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="nope does not exist. Give the top folder of the DICOM export"):
        _run(tmp_path / "nope", tmp_path / "m.csv")
    with pytest.raises(
        SystemExit, match="empty holds no files. Give the folder the DICOM export was unpacked"
    ):
        _run(empty, tmp_path / "m.csv")
    (tmp_path / "export.zip").write_bytes(b"PK\x03\x04")
    with pytest.raises(SystemExit, match=r"export.zip is an archive; unpack it first"):
        _run(tmp_path / "export.zip", tmp_path / "m.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(SystemExit, match=r"dir.csv is a folder; give a file name such as"):
        _run(empty, tmp_path / "dir.csv")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--bone-kernels", "H[6-9"], "not a regular expression"),
        (["--slice-thickness", "6", "2"], "need 0 <= low <= high"),
        (["--out", "m.txt"], "give a .csv or .parquet file name"),
        (["--workers", "0"], "--workers 0: give 1 or more"),
    ],
)
def test_bad_options_are_argparse_errors(tmp_path, capsys, extra, message):
    argv = [str(tmp_path), "--out", str(tmp_path / "m.csv"), *extra]
    with pytest.raises(SystemExit) as exit_info:
        scan_manifest.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_docs_page_lists_every_skip_reason():
    from datamodules.crossdl.head_ct.dicom_index import SKIP_REASONS

    page = (Path(__file__).parents[3] / "docs" / "hospital" / "dicom-manifest.md").read_text()
    for reason in SKIP_REASONS:
        assert f"| `{reason}` |" in page, reason
