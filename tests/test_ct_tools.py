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

from datamodules.synthetic_ct_scans import write_ct_scan_dataset
from tools import check_scans, register_atlas
from tools.resource_estimate import activation_bytes, cached_item_bytes, estimate_resources

SMALL = {"shape": (80, 80, 24), "spacing": (3.0, 3.0, 6.4)}


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    return write_ct_scan_dataset(
        tmp_path_factory.mktemp("ct") / "data",
        n_scans=6,
        seed=2,
        progress=False,
        n_reference_atlases=1,
        **SMALL,
    )


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
    assert checked["scan_id"].tolist() == ["HCT00000", "HCT00004", "HCT00005"]
    assert (checked["scan_check"] == "ok").all()
    resources = json.loads((out / "resources.json").read_text())
    assert resources["n_scans"] == 3
    assert resources["cache_disk_bytes"] == 3 * cached_item_bytes((160, 160, 80), 4, True, True)
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
