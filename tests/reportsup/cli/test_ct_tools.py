"""reportsup-check-scans, reportsup-register-atlas and the resource estimate."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from torch import nn

from datamodules.synthetic.datasets.ct_scans import write_ct_scan_dataset
from reportsup.cli import check_scans, register_atlas
from reportsup.runner.resources import activation_bytes, cached_item_bytes, estimate_resources


def _break_scans(data):
    """Scan 1 loses a middle slice, scan 2 keeps 5 slices, scan 3 becomes an MR series."""
    files = sorted((data / "dicom" / "HCT00001").iterdir(), key=lambda f: pydicom.dcmread(f).InstanceNumber)
    files[10].unlink()
    for f in sorted((data / "dicom" / "HCT00002").iterdir())[5:]:
        f.unlink()
    for f in (data / "dicom" / "HCT00003").iterdir():
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)


def test_check_scans_quarantines_each_bad_scan_with_its_reason(ct_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(ct_dir, data)
    _break_scans(data)
    out = tmp_path / "checked"
    check_scans.main(
        [str(data / "manifest.csv"), "--out-dir", str(out), "--labels", str(data / "reports.csv")]
    )
    quarantine = pd.read_csv(out / "quarantine.csv").set_index("scan_id")
    assert quarantine["reason"].to_dict() == {
        "HCT00001": "missing_slices",
        "HCT00002": "too_few_slices",
        "HCT00003": "not_ct",
    }
    assert all("HCT0000" in m or "dicom" in m for m in quarantine["message"])
    checked = pd.read_csv(out / "checked_manifest.csv")
    assert checked["scan_id"].tolist() == ["HCT00000", *(f"HCT{i:05d}" for i in range(4, 10))]
    assert (checked["scan_check"] == "ok-v3").all()  # the validator's version: new checks re-validate
    assert (checked["reordered"] == 0).all()  # the phantoms' InstanceNumbers follow their positions
    resources = json.loads((out / "resources.json").read_text())
    assert resources["n_scans"] == 7
    assert resources["cache_disk_bytes"] == 7 * cached_item_bytes((160, 160, 80), 4, True, True)
    assert resources["accelerator_bytes"] > 0
    printed = capsys.readouterr().out
    assert "quarantined: 3" in printed and "accelerator memory" in printed
    with pytest.raises(SystemExit, match="exists; choose a new --out-dir"):
        check_scans.main([str(data / "manifest.csv"), "--out-dir", str(out)])


def test_check_scans_reports_a_mask_of_the_wrong_size(ct_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(ct_dir, data)
    nib.save(
        nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)),
        data / "truth" / "HCT00000_lesions.nii.gz",
    )
    out = tmp_path / "checked"
    check_scans.main([str(data / "manifest.csv"), "--out-dir", str(out)])
    q = pd.read_csv(out / "quarantine.csv")
    assert q["reason"].tolist() == ["mask_shape"] and "voxel_mask" in q["message"][0]


def _edit_headers(folder, **tags):
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(f)


def test_check_scans_quarantines_bone_window_reconstructions(ct_dir, tmp_path):
    """Liu et al. 2023 removed 424 bone-window scans (Figure S3c): by kernel or by display window."""
    data = tmp_path / "data"
    shutil.copytree(ct_dir, data)
    _edit_headers(data / "dicom" / "HCT00004", ConvolutionKernel="H70h")  # Siemens bone kernel
    _edit_headers(data / "dicom" / "HCT00005", WindowCenter=600, WindowWidth=2800)
    _edit_headers(data / "dicom" / "HCT00006", ConvolutionKernel="H31s")  # Siemens soft-tissue head kernel
    _edit_headers(data / "dicom" / "HCT00007", ConvolutionKernel="FC30")  # site-specific bone kernel
    check_scans.main([str(data / "manifest.csv"), "--out-dir", str(tmp_path / "a")])
    q = pd.read_csv(tmp_path / "a" / "quarantine.csv").set_index("scan_id")
    assert q["reason"].to_dict() == {"HCT00004": "bone_window", "HCT00005": "bone_window"}
    assert "'H70h' matches bone-kernel pattern" in q.loc["HCT00004", "message"]
    assert "window 600/2800" in q.loc["HCT00005", "message"]
    # Patterns are configurable: a site's kernel list replaces the defaults; the window test can be off.
    check_scans.main(
        [
            str(data / "manifest.csv"),
            "--out-dir",
            str(tmp_path / "b"),
            "--bone-kernels",
            "^FC3\\d",
            "--no-bone-window",
        ]
    )
    q = pd.read_csv(tmp_path / "b" / "quarantine.csv")
    assert q[["scan_id", "reason"]].values.tolist() == [["HCT00007", "bone_window"]]
    with pytest.raises(SystemExit):
        check_scans.main(
            [str(data / "manifest.csv"), "--out-dir", str(tmp_path / "c"), "--bone-kernels", "H[6"]
        )


def test_activation_count_is_exact_for_a_known_network():
    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU())
    acts, params = activation_bytes(net, (1, 1, 4, 4, 4))
    assert acts == 2 * (2 * 64) * 4 and params == 2 * 27 + 2
    est = estimate_resources([100, 300], (4, 4, 4), 4, True, False, num_workers=2)
    assert est.host_ram_bytes == 2 * (300 * 18 + 2 * cached_item_bytes((4, 4, 4), 4, True, False))


@pytest.mark.slow
def test_registration_recovers_the_true_regions_and_is_resumable(tmp_path):
    # The phantoms' own CT geometry (1.9 x 1.9 x 4.8 mm): at coarser voxels Dice drops from boundary effects.
    ct_dir = write_ct_scan_dataset(
        tmp_path / "data", n_scans=2, seed=3, progress=False, n_reference_atlases=0
    )
    manifest = pd.read_csv(ct_dir / "manifest.csv")
    manifest["image"] = [str(ct_dir / p) for p in manifest["image"]]
    atlas = register_atlas.Atlas(
        "average_ct", ct_dir / "atlas" / "average_ct.nii.gz", ct_dir / "atlas" / "average_ct_regions.nii.gz"
    )
    settings = register_atlas.RegistrationSettings(max_iterations=64, threads=2)
    out, report = register_atlas.register_manifest(
        manifest, [atlas], tmp_path, settings, workers=1, progress=False
    )
    assert report["status"].isin(["ok", "review"]).all(), report
    dices = []
    for row in out.itertuples():
        warped = np.asarray(nib.load(row.region_mask).dataobj)
        truth = np.asarray(nib.load(ct_dir / row.true_region_mask).dataobj)
        assert warped.shape == truth.shape
        d = [
            2 * ((warped == k) & (truth == k)).sum() / ((warped == k).sum() + (truth == k).sum())
            for k in range(1, 18)
        ]
        dices.append(np.mean(d))
    assert np.mean(dices) >= 0.8, dices
    # Resumable: finished masks are skipped, not recomputed.
    _, again = register_atlas.register_manifest(
        manifest, [atlas], tmp_path, settings, workers=1, progress=False
    )
    assert (again["status"] == "skipped").all()
    # A label map that warps to nothing is a detected failure, and no mask enters the manifest.
    empty = tmp_path / "empty_regions.nii.gz"
    img = nib.load(atlas.labels)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), empty)
    bad = register_atlas.Atlas("empty", atlas.image, empty)
    out_bad, rep_bad = register_atlas.register_manifest(
        manifest.head(1), [bad], tmp_path, settings, progress=False
    )
    assert rep_bad["status"].tolist() == ["failed"] and out_bad["region_mask"].tolist() == [""]


def _run(*args: str, cwd=None) -> str:
    """Run a console command of this package from the test's interpreter; fail with its output."""
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, timeout=1500, cwd=cwd
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_forty_dicom_phantoms_through_check_register_and_datamodule(tmp_path):
    """The issue's acceptance run: 40 DICOM phantoms -> reportsup-check-scans -> reportsup-register-atlas
    -> HeadCTDataModule at the paper's 160 x 160 x 80, with masks and labels."""
    # Relative paths from a working directory, as users type them.
    _run("reportsup-synthetic-ct-scans", "data", "--n-scans", "40", "--formats", "dicom", cwd=tmp_path)
    out = _run(
        "reportsup-check-scans",
        "data/manifest.csv",
        "--out-dir",
        "checked",
        "--labels",
        "data/reports.csv",
        cwd=tmp_path,
    )
    assert "usable: 40, quarantined: 0" in out
    atlas = "average_ct=data/atlas/average_ct.nii.gz,data/atlas/average_ct_regions.nii.gz"
    out = _run(
        "reportsup-register-atlas",
        "checked/checked_manifest.csv",
        "--atlas",
        atlas,
        "--out-dir",
        "registered",
        "--max-iterations",
        "32",  # as the DaMIL demo (one phantom: Dice 0.849 at 32 vs 0.854 at 64 iterations), half the time
        "--workers",
        "2",
        cwd=tmp_path,
    )
    data, registered = tmp_path / "data", tmp_path / "registered"
    report = pd.read_csv(registered / "registration_report.csv")
    assert len(report) == 40 and report["status"].isin(["ok", "review"]).all(), out
    manifest = pd.read_csv(registered / "manifest_registered.csv")
    dices = []
    for row in manifest.itertuples():
        warped = np.asarray(nib.load(row.region_mask).dataobj)
        truth = np.asarray(nib.load(row.true_region_mask).dataobj)
        d = [
            2 * ((warped == k) & (truth == k)).sum() / ((warped == k).sum() + (truth == k).sum())
            for k in range(1, 18)
        ]
        dices.append(np.mean(d))
    print(
        f"registration: mean Dice {np.mean(dices):.3f} (min {np.min(dices):.3f}), {report['seconds'].mean():.1f} s each"
    )
    assert np.mean(dices) >= 0.8

    from datamodules.crossdl.head_ct.datamodule import HeadCTDataModule

    dm = HeadCTDataModule(
        str(registered / "manifest_registered.csv"),
        labels_path=str(data / "reports.csv"),
        cache_dir=str(tmp_path / "cache"),
        output_dir=str(tmp_path / "run"),
        num_workers=2,
    )
    dm.setup()
    assert sum(dm.summary["sizes"].values()) == 40
    batch = next(iter(dm.train_dataloader()))  # two worker processes: the datasets pickle
    assert batch["image"].shape == (1, 1, 160, 160, 80)
    assert batch["region_mask"].shape == (1, 1, 160, 160, 80) and batch["voxel_mask"].shape == (
        1,
        4,
        160,
        160,
        80,
    )
    assert len(np.unique(batch["region_mask"].numpy())) > 10  # the registered atlas regions survived
    assert batch["region_labels"].shape == (1, 17, 4) and batch["scan_labels"].shape == (1, 4)
    assert dm.positive_rates.shape == (17, 4) and dm.positive_rates.sum() > 0


def test_check_scans_keeps_and_lists_a_series_numbered_off_its_positions(ct_dir, tmp_path, capsys):
    """Issue 21 item 2: not quarantined; the reordering is printed with the scan and counted."""
    data = tmp_path / "data"
    shutil.copytree(ct_dir, data)
    files = sorted((data / "dicom" / "HCT00004").iterdir(), key=lambda f: pydicom.dcmread(f).InstanceNumber)
    for f, number in zip(files, [2, 1, *range(3, len(files) + 1)], strict=True):  # first two swapped
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = number
        ds.save_as(f)
    out = tmp_path / "checked"
    check_scans.main([str(data / "manifest.csv"), "--out-dir", str(out)])
    assert pd.read_csv(out / "quarantine.csv").empty
    checked = pd.read_csv(out / "checked_manifest.csv").set_index("scan_id")
    assert checked.at["HCT00004", "reordered"] == 2 and checked["reordered"].sum() == 2
    printed = capsys.readouterr().out
    assert "1 usable series have InstanceNumbers that disagree with their slice positions" in printed
    assert f"  - HCT00004: 2 slice(s) moved ({data / 'dicom' / 'HCT00004'})" in printed
