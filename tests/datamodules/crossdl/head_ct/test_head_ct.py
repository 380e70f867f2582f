"""Head-CT pipeline (issue: DICOM/NIfTI loading, paper preprocessing, phantoms, caching, DataModule)."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.crossdl.head_ct.datamodule import HeadCTDataModule
from datamodules.crossdl.head_ct.dicom_series import write_dicom_series
from datamodules.crossdl.head_ct.manifest import ManifestError, scan_labels
from datamodules.crossdl.head_ct.transforms import (
    IMAGE,
    MATRIX,
    REGION_MASK,
    VOXEL_MASK,
    PreprocessConfig,
    RandLeftRightFlipd,
    hu_window,
    preprocessing,
    region_label_flip_lut,
)
from datamodules.synthetic.datasets.ct_scans import write_nifti
from datamodules.synthetic.images.head_phantom import render_phantom, voxel_matrix
from datamodules.synthetic.lesion_spec import Lesion, ScanSpec, abnormality_matrix, sample_scan_spec
from reportsup.contracts.labels.crossdl import LabelSpace
from reportsup.contracts.splits import SplitError
from tests.conftest import SMALL_CT

SPACE = LabelSpace()
SMALL = SMALL_CT


def _datamodule(data, tmp_path, **overrides) -> HeadCTDataModule:
    """The synthetic set's manifest and gold labels, its true region maps as masks, 32 x 32 x 16."""
    kwargs = {
        "labels_path": str(data / "reports.csv"),
        "region_mask_column": "true_region_mask",
        "spatial_size": (32, 32, 16),
        "cache_dir": str(tmp_path / "cache"),
        "split": {"seed": 0},
        **overrides,
    }
    return HeadCTDataModule(str(data / "manifest.csv"), **kwargs)


def test_hu_window_is_the_intended_level35_width90_mapping():
    x = torch.tensor([[-1000.0, -10.0, 35.0, 80.0, 1000.0]])
    y = hu_window(["image"])({"image": x})["image"]
    # (clip(x, -10, 80) + 10) / 90 * 255, not the paper's printed min(max(x,-10),80)/90*255
    assert torch.allclose(y, torch.tensor([[0.0, 0.0, 127.5, 255.0, 255.0]]))


def test_phantom_voxels_agree_with_the_lesion_spec():
    rng = random.Random(7)
    for seed in range(6):
        spec = sample_scan_spec(f"S{seed}", "P", rng, abnormal_rate=1.0)
        ph = render_phantom(spec, seed=seed, **SMALL)
        expected = abnormality_matrix(spec, SPACE)[: len(SPACE.anatomical_regions)]
        voxels = voxel_matrix(ph.regions, ph.lesion_bits, SPACE)
        if any(SPACE.unclear in lesion.regions for lesion in spec.lesions):
            # An "unclear" lesion lies in some lobe the report does not name: more regions in voxels.
            assert (voxels >= expected).all(), spec
        else:
            assert (voxels == expected).all(), spec


def test_lesion_population_options_shape_the_sampled_scans():
    rng = random.Random(3)
    specs = [
        sample_scan_spec(f"S{i}", "P", rng, 1.0, lesion_count_weights=(0, 0, 1), size_range_mm=(30, 40))
        for i in range(20)
    ]
    assert all(len(s.lesions) == 3 for s in specs)
    sizes = [
        lesion.size_mm for s in specs for lesion in s.lesions if lesion.regions[0] not in ("other", "unclear")
    ]
    assert sizes and all(30 <= size <= 40 for size in sizes)
    # The defaults keep the earlier random stream: existing synthetic data sets stay reproducible.
    a, b = random.Random(5), random.Random(5)
    assert sample_scan_spec("S", "P", a) == sample_scan_spec("S", "P", b, 0.6, (0.6, 0.3, 0.1), (4, 60))


def test_phantom_hu_values_are_ct_like():
    spec = ScanSpec("S", "P", [Lesion("hematoma", ("right_basal_ganglia",), 30.0)])
    ph = render_phantom(spec, seed=0, noise_hu=0.0)
    hyper = ph.lesion_bits == 1 << SPACE.types.index("intraparenchymal_hyperdensity")
    assert 55 < np.median(ph.hu[hyper]) < 85
    brain = (ph.regions > 0) & (ph.lesion_bits == 0)
    assert 15 < np.median(ph.hu[brain]) < 45  # grey/white matter
    assert ph.hu.max() > 800 and ph.hu.min() < -900  # skull and air
    assert set(np.unique(ph.regions)) == set(range(18))  # all 17 regions + background in the slab


def _left_frontal_scan(tmp_path):
    spec = ScanSpec("L", "P", [Lesion("hematoma", ("left_frontal_lobe",), 30.0)])
    for seed in range(50):  # a hematoma away from the midline, so that "on the left" is unambiguous
        ph = render_phantom(spec, seed=seed, **SMALL)
        x_lps_mm = ph.origin_lps[0] + np.argwhere(ph.lesion_bits > 0)[:, 0].mean() * ph.spacing[0]
        if x_lps_mm > 25:  # LPS +x is the patient's left
            break
    write_dicom_series(
        ph.hu, ph.spacing, tmp_path / "dicom", patient_id="P", origin=ph.origin_lps, seed_uid="x"
    )
    write_nifti(ph.regions, ph.affine_ras, tmp_path / "regions.nii.gz")
    write_nifti(ph.lesion_bits, ph.affine_ras, tmp_path / "lesions.nii.gz")
    item = {IMAGE: str(tmp_path / "dicom"), REGION_MASK: str(tmp_path / "regions.nii.gz")}
    item[VOXEL_MASK] = str(tmp_path / "lesions.nii.gz")
    out = preprocessing(PreprocessConfig(spatial_size=(48, 48, 24)))(item)
    a = np.zeros((len(SPACE.regions), len(SPACE.types)), np.float32)
    a[SPACE.regions.index("left_frontal_lobe"), 0] = 1
    out[MATRIX] = torch.tensor(a)
    return out


def test_left_lesion_is_on_the_left_and_flip_relabels_it_right(tmp_path):
    item = _left_frontal_scan(tmp_path)
    hyper = item[VOXEL_MASK][0].numpy().astype(bool)  # intraparenchymal hyperdensity
    region = item[REGION_MASK][0].numpy()
    left = np.isin(region, [i + 1 for i, r in enumerate(SPACE.anatomical_regions) if r.startswith("left_")])
    right = np.isin(region, [i + 1 for i, r in enumerate(SPACE.anatomical_regions) if r.startswith("right_")])
    # RAS: axis 0 runs from the patient's left to right, whatever order the DICOM stored.
    assert np.argwhere(left)[:, 0].mean() + 5 < np.argwhere(right)[:, 0].mean()
    midline = (np.argwhere(left)[:, 0].mean() + np.argwhere(right)[:, 0].mean()) / 2
    assert hyper.sum() > 10 and np.argwhere(hyper)[:, 0].mean() < midline - 3
    left_frontal = SPACE.anatomical_regions.index("left_frontal_lobe") + 1
    right_frontal = SPACE.anatomical_regions.index("right_frontal_lobe") + 1
    assert np.mean(region[hyper] == left_frontal) > 0.9

    flipped = RandLeftRightFlipd([IMAGE, REGION_MASK, VOXEL_MASK], SPACE, prob=1.0)(item)
    hyper_f = flipped[VOXEL_MASK][0].numpy().astype(bool)
    assert (hyper_f == hyper[::-1]).all()  # mirrored along axis 0
    assert np.argwhere(hyper_f)[:, 0].mean() > (item[IMAGE].shape[1] - 1 - midline) + 3
    assert np.mean(flipped[REGION_MASK][0].numpy()[hyper_f] == right_frontal) > 0.9
    m = flipped[MATRIX]
    assert (
        m[SPACE.regions.index("right_frontal_lobe"), 0] == 1
        and m[SPACE.regions.index("left_frontal_lobe")].sum() == 0
    )
    assert torch.equal(flipped[IMAGE], torch.flip(item[IMAGE], dims=[1]))


def test_region_flip_lut_is_an_involution():
    lut = region_label_flip_lut(SPACE)
    assert (lut[lut] == np.arange(len(lut))).all() and lut[0] == 0
    assert (
        lut[SPACE.anatomical_regions.index("brain_stem") + 1]
        == SPACE.anatomical_regions.index("brain_stem") + 1
    )


def test_datamodule_gives_tensors_masks_labels_and_rates(ct_dir, tmp_path):
    dm = _datamodule(ct_dir, tmp_path, output_dir=str(tmp_path / "run"))
    dm.setup()
    assert sum(dm.summary["sizes"].values()) == 10
    batch = next(iter(dm.train_dataloader()))
    assert batch[IMAGE].shape == (1, 1, 32, 32, 16) and batch[IMAGE].dtype == torch.float32
    assert batch[REGION_MASK].shape == (1, 1, 32, 32, 16) and int(batch[REGION_MASK].max()) <= 17
    assert batch[VOXEL_MASK].shape == (1, 4, 32, 32, 16)
    assert batch["region_labels"].shape == (1, 17, 4) and batch["scan_labels"].shape == (1, 4)
    assert batch["scan_labels"][0].tolist() == batch[MATRIX][0].amax(dim=0).tolist()
    assert dm.positive_rates.shape == (17, 4) and 0 <= dm.positive_rates.min() <= dm.positive_rates.max() <= 1
    saved = (tmp_path / "run" / "intensity_stats.json").read_text()
    assert dm.stats.n_scans == dm.summary["sizes"]["train"] and '"mean"' in saved
    # Training-set z-scoring: the training images have mean ~0, std ~1 over all voxels.
    xs = torch.cat([dm.datasets["train"][i][IMAGE].flatten() for i in range(len(dm.datasets["train"]))])
    assert abs(float(xs.mean())) < 0.25 and 0.7 < float(xs.std()) < 1.3
    split = pd.read_csv(tmp_path / "run" / "splits.csv")
    assert split.groupby("patient_id")["split"].nunique().max() == 1  # patient-level

    # A second DataModule on the same run directory reuses the saved statistics (resume/inference)...
    stats_file = tmp_path / "run" / "intensity_stats.json"
    stats_file.write_text(json.dumps({**json.loads(saved), "mean": 123.0}))
    again = _datamodule(ct_dir, tmp_path, output_dir=str(tmp_path / "run"))
    again.setup()
    assert again.stats.mean == 123.0 and again.stats.std == dm.stats.std
    # ... and refuses another split than the one the run trained on.
    with pytest.raises(SplitError, match=r"splits\.csv: \d+ row\(s\) are in another split"):
        _datamodule(ct_dir, tmp_path, output_dir=str(tmp_path / "run"), split={"seed": 1}).setup()


def test_cache_hit_path_does_no_decoding(ct_dir, tmp_path):
    data = tmp_path / "copy"
    shutil.copytree(ct_dir, data)
    dm = _datamodule(data, tmp_path)
    dm.setup()
    first = [dm.datasets["test"][i][IMAGE] for i in range(len(dm.datasets["test"]))]
    shutil.rmtree(data / "dicom")  # nothing left to decode: only the cache can serve the second epoch
    second = [dm.datasets["test"][i][IMAGE] for i in range(len(dm.datasets["test"]))]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    # Each scan read so far (training scans for the statistics, test scans) cached once, keyed by config.
    n_read = len(dm.datasets["train"]) + len(dm.datasets["test"])
    assert len(list((tmp_path / "cache").glob("*/*.pt"))) == n_read


def test_bad_scan_stops_setup_with_its_name(ct_dir, tmp_path):
    data = tmp_path / "copy"
    shutil.copytree(ct_dir, data)
    files = sorted((data / "dicom" / "HCT00003").iterdir())
    for f in files[:-5]:
        f.unlink()
    dm = _datamodule(data, tmp_path, region_mask_column=None)
    with pytest.raises(ManifestError, match=r"HCT00003.*too_few_slices|HCT00003.*fewer than") as err:
        dm.setup()
    assert "reportsup-check-scans" in str(err.value)


def test_validated_scans_are_not_reread_until_their_files_change(ct_dir, tmp_path, monkeypatch):
    import datamodules.crossdl.head_ct.datamodule as head_ct

    data = tmp_path / "copy"
    shutil.copytree(ct_dir, data)
    calls = []
    real = head_ct.validate_manifest_row
    monkeypatch.setattr(
        head_ct,
        "validate_manifest_row",
        lambda path, masks, **kw: calls.append(path) or real(path, masks, **kw),
    )
    _datamodule(data, tmp_path, region_mask_column=None).setup()
    n_scans = len(calls)
    assert n_scans == len(pd.read_csv(data / "manifest.csv"))
    _datamodule(data, tmp_path, region_mask_column=None).setup()  # a second run: nothing re-read
    assert len(calls) == n_scans
    (record,) = (tmp_path / "cache").glob("validated_scans_*.json")
    record.write_text("{")  # a cut-off record: every scan is validated again, no error
    _datamodule(data, tmp_path, region_mask_column=None).setup()
    assert len(calls) == 2 * n_scans
    monkeypatch.setattr(head_ct, "VALIDATION_VERSION", head_ct.VALIDATION_VERSION + 1)  # new checks
    _datamodule(data, tmp_path, region_mask_column=None).setup()
    assert len(calls) == 3 * n_scans  # scans recorded under the older checks are validated again
    calls.clear()
    for f in sorted((data / "dicom" / "HCT00003").iterdir())[:-5]:  # damaged after validation
        f.unlink()
    with pytest.raises(ManifestError, match=r"HCT00003"):
        _datamodule(data, tmp_path, region_mask_column=None).setup()
    assert calls == [str(data / "dicom" / "HCT00003")]  # only the changed scan is read again


def _split_off_holdout(data, n_patients: int = 1):
    """Move the scans of the first ``n_patients`` patients into a hold-out manifest and labels table
    (``holdout.csv``, ``holdout_reports.csv``; the labels: every cell 1, unlike any development scan)."""
    manifest = pd.read_csv(data / "manifest.csv")
    chosen = sorted(manifest["patient_id"].unique())[:n_patients]
    held = manifest[manifest["patient_id"].isin(chosen)]
    held.to_csv(data / "holdout.csv", index=False)
    reports = pd.read_csv(data / "reports.csv")
    cells = SPACE.matrix_columns()
    reports = reports[reports["report_id"].isin(held["report_id"])].assign(**dict.fromkeys(cells, 1))
    reports.to_csv(data / "holdout_reports.csv", index=False)
    return held


def test_holdout_sets_leave_development_and_are_scored_as_their_own_test_sets(ct_dir, tmp_path):
    data = tmp_path / "copy"
    shutil.copytree(ct_dir, data)
    held = _split_off_holdout(data)
    # The development manifest still lists the hold-out patients' scans: they must leave it.
    spec = {"manifest_path": str(data / "holdout.csv"), "labels_path": str(data / "holdout_reports.csv")}
    dm = _datamodule(data, tmp_path, holdouts={"prospective": spec}, output_dir=str(tmp_path / "run"))
    dm.setup()
    assert dm.test_set_names == ["test", "prospective"] and len(dm.test_dataloader()) == 2
    held_patients = set(held["patient_id"])
    for name in ("train", "val", "test"):
        assert not held_patients & set(dm.tables[name]["patient_id"]), name
    assert sorted(dm.test_table("prospective")["scan_id"]) == sorted(held["scan_id"])
    item = dm.datasets["prospective"][0]
    assert item["region_labels"].min() == 1  # the hold-out's own labels table, not the development one
    summary = dm.summary["holdouts"]["prospective"]
    assert summary["n_scans"] == len(held) and summary["development_scans_removed"] == len(held)
    splits = pd.read_csv(tmp_path / "run" / "splits.csv")
    assert set(splits.loc[splits["split"] == "prospective", "id"]) == set(held["scan_id"])
    # The other patients keep the split they have without the hold-out (a hold-out added later to a
    # test-only run of a trained model moves nobody into its test split).
    _datamodule(data, tmp_path, output_dir=str(tmp_path / "run0")).setup()
    before = pd.read_csv(tmp_path / "run0" / "splits.csv").set_index("id")["split"]
    after = splits.set_index("id")["split"]
    kept = after[after != "prospective"]
    assert (before[kept.index] == kept).all()


def test_bad_holdout_settings_name_the_key_and_the_fix(ct_dir, tmp_path):
    data = tmp_path / "copy"
    shutil.copytree(ct_dir, data)
    _split_off_holdout(data)
    with pytest.raises(ManifestError, match=r"data\.holdouts\.val: 'val' names a development split"):
        _datamodule(data, tmp_path, holdouts={"val": {"manifest_path": str(data / "holdout.csv")}})
    with pytest.raises(ManifestError, match=r"data\.holdouts\.pros needs a manifest_path"):
        _datamodule(data, tmp_path, holdouts={"pros": {"labels_path": "x.csv"}})
    with pytest.raises(ManifestError, match=r"unknown key\(s\) \['manifest'\]"):
        _datamodule(data, tmp_path, holdouts={"pros": {"manifest_path": "a.csv", "manifest": "a.csv"}})
    pd.read_csv(data / "holdout.csv").drop(columns=["voxel_mask"]).to_csv(data / "holdout.csv", index=False)
    dm = _datamodule(
        data,
        tmp_path,
        holdouts={
            "pros": {"manifest_path": str(data / "holdout.csv"), "labels_path": str(data / "reports.csv")}
        },
    )
    with pytest.raises(ManifestError, match=r"holdout\.csv \(data\.holdouts\.pros\): mask columns"):
        dm.setup()


def test_no_findings_reports_are_unknown_not_normal():
    manifest = pd.DataFrame(
        {"scan_id": ["a", "b"], "patient_id": ["p", "q"], "image": ["x", "y"], "report_id": ["r1", "r2"]}
    )
    labels = pd.DataFrame(
        [
            {"report_id": "r1", **dict.fromkeys(SPACE.matrix_columns(), "0")},
            {"report_id": "r2", **dict.fromkeys(SPACE.matrix_columns(), "")},
        ]
    )
    labels.loc[0, "unclear__intraparenchymal_hypodensity"] = "1"
    out = scan_labels(manifest, SPACE, labels)
    assert out.known.tolist() == [True, False] and out.unclear.tolist() == [True, False]
    assert out.scan[0].tolist() == [0, 0, 1, 0]  # the union includes the unclear row
    with pytest.raises(ManifestError, match="no row for report_id 'r3'"):
        scan_labels(manifest.assign(report_id=["r1", "r3"]), SPACE, labels)


@pytest.mark.slow  # two spawned workers each load the MNI templates
def test_phantoms_written_by_worker_processes_equal_the_sequential_ones(tmp_path):
    import nibabel as nib

    from datamodules.synthetic.datasets.ct_scans import generate_ct_scans

    small = dict(shape=(48, 48, 12), spacing=(4.0, 4.0, 10.0), formats=("nifti",), n_reference_atlases=0)
    generate_ct_scans(tmp_path / "one", 3, seed=3, workers=1, progress=False, **small)
    generate_ct_scans(tmp_path / "two", 3, seed=3, workers=2, progress=False, **small)
    for name in ("manifest.csv", "reports.csv", "lesion_specs.jsonl"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text(), name
    for rel in pd.read_csv(tmp_path / "one" / "manifest.csv")[["image", "voxel_mask"]].to_numpy().ravel():
        a, b = (np.asarray(nib.load(tmp_path / d / rel).dataobj) for d in ("one", "two"))
        assert np.array_equal(a, b), rel
