"""reportsup.ScanAnalyzer: a tiny DaMIL trained one step on the synthetic CT set (``ct_dir``) and saved by
Lightning, loaded without unpickling, predicts what the module predicts on the DataModule's own test
batches; its export reloads to the same outputs; reportsup-damil-predict writes the same table."""

from __future__ import annotations

import json
import shutil

import lightning.pytorch as pl
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.crossdl.head_ct.datamodule import HeadCTDataModule
from datamodules.crossdl.head_ct.manifest import ManifestError
from lightning_modules.crossdl.damil.module import DaMILModule, prediction_columns
from reportsup import ScanAnalyzer
from reportsup.api.loading import UnsafeCheckpointError
from reportsup.api.scans import ScanModelError
from reportsup.cli import damil_predict

SIZE = (32, 32, 16)


@pytest.fixture(scope="module")
def damil_run(ct_dir, tmp_path_factory):
    """A run folder whose checkpoints/best-*.ckpt Lightning wrote after one training step and one validation batch, and the
    DataModule that trained it."""
    run = tmp_path_factory.mktemp("damil_run")
    dm = HeadCTDataModule(
        str(ct_dir / "manifest.csv"),
        labels_path=str(ct_dir / "reports.csv"),
        region_mask_column="true_region_mask",
        spatial_size=SIZE,
        cache_dir=str(run / "cache"),
        split={"seed": 0},
    )
    torch.manual_seed(0)
    module = DaMILModule(network={"base_filters": 2, "depth": 4, "n_scales": 2})
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=str(run),
        callbacks=[
            ModelCheckpoint(
                dirpath=str(run / "checkpoints"),
                filename="best-epoch{epoch:02d}",
                monitor="val/region_mil",
                auto_insert_metric_name=False,
            )
        ],
    )
    trainer.fit(module, datamodule=dm)
    return run, dm


def _expected(run, dm) -> pd.DataFrame:
    """The module's own predictions on the DataModule's test batches (cached preprocessing, z-scoring)."""
    module = DaMILModule.load_from_checkpoint(
        next((run / "checkpoints").glob("best-*.ckpt")), map_location="cpu", weights_only=True
    ).eval()
    space = module.space
    rows = []
    table = dm.test_table("test")
    for batch in dm.test_dataloader()[0]:
        with torch.no_grad():
            pred = module.predict_scan(batch)
        for k, index in enumerate(batch["index"].tolist()):
            values = np.concatenate([pred["scan_probs"][k].numpy(), pred["region_probs"][k].numpy().ravel()])
            rows.append(
                {
                    "scan_id": table["scan_id"].iloc[index],
                    **dict(zip(prediction_columns(space), values, strict=False)),
                }
            )
    return pd.DataFrame(rows).set_index("scan_id")


def _test_manifest(ct_dir, dm) -> pd.DataFrame:
    manifest = pd.read_csv(ct_dir / "manifest.csv", dtype=str)
    manifest["image"] = [str(ct_dir / p) for p in manifest["image"]]
    return manifest[manifest["scan_id"].isin(dm.test_table("test")["scan_id"])][
        ["scan_id", "patient_id", "image"]
    ]


def test_run_folder_predictions_equal_the_modules_own_on_the_test_batches(damil_run, ct_dir):
    run, dm = damil_run
    analyzer = ScanAnalyzer.from_pretrained(run)  # the run folder resolves to checkpoints/best-*.ckpt
    manifest = _test_manifest(ct_dir, dm)
    table = analyzer.predict(manifest)
    assert list(table.columns) == [
        "scan_id",
        "patient_id",
        *prediction_columns(analyzer.space),
        *analyzer.decision_columns,
    ]
    assert len(table.columns) == 2 + 4 + 17 * 4 + 4 and len(table) == len(manifest) > 0
    for t in analyzer.space.types:  # decisions at the fixed threshold (this run chose none)
        assert analyzer.thresholds[f"scan__{t}"] == 0.5
        assert (table[f"scan__{t}_positive"] == (table[f"scan__{t}"] > 0.5)).all()
    expected = _expected(run, dm)
    got = table.set_index("scan_id")[expected.columns].loc[expected.index]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-4, atol=1e-5)
    assert analyzer.intensity_stats == {"mean": dm.stats.mean, "std": dm.stats.std}


def test_save_pretrained_round_trip_gives_the_same_outputs_without_pickle(damil_run, ct_dir, tmp_path):
    run, dm = damil_run
    analyzer = ScanAnalyzer.from_pretrained(run)
    folder = analyzer.save_pretrained(tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (folder / "README.md").read_text()
    assert "# damil:" in card and "Liu A" in card and "ScanAnalyzer.from_pretrained" in card
    again = ScanAnalyzer.from_pretrained(folder)
    config = again.config()
    assert config["preprocessing"]["spatial_size"] == list(SIZE)
    assert config["labels"] == prediction_columns(again.space) and config["threshold"] == 0.5
    manifest = _test_manifest(ct_dir, dm).head(2)
    pd.testing.assert_frame_equal(again.predict(manifest), analyzer.predict(manifest))
    with pytest.raises(FileExistsError, match="not empty"):
        analyzer.save_pretrained(folder)


def test_cli_writes_the_api_table_and_maps_and_lists_bad_scans(damil_run, ct_dir, tmp_path):
    run, dm = damil_run
    manifest = _test_manifest(ct_dir, dm).head(2)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a scan")
    with_bad = pd.concat(
        [manifest, pd.DataFrame({"scan_id": ["broken"], "patient_id": ["px"], "image": [str(bad)]})]
    )
    with_bad.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "pred"
    ckpt = next((run / "checkpoints").glob("best-*.ckpt"))
    damil_predict.main([str(ckpt), str(tmp_path / "manifest.csv"), "--out-dir", str(out), "--top", "1"])
    written = pd.read_csv(out / "predictions.csv", dtype={"scan_id": str, "patient_id": str})
    with pytest.warns(UserWarning, match="1 scan"):
        direct = ScanAnalyzer.from_pretrained(ckpt).predict(with_bad)
    pd.testing.assert_frame_equal(written, direct, check_exact=False, rtol=1e-6)
    assert pd.read_csv(out / "skipped_scans.csv")["scan_id"].tolist() == ["broken"]
    scan = manifest["scan_id"].iloc[0]
    maps = nib.load(out / "maps" / f"{scan}_abnormality.nii.gz")
    assert maps.shape[-1] == 4 and len(list((out / "overlays").glob(f"{scan}_1_*.png"))) == 1
    with pytest.raises(SystemExit, match="exists"):
        damil_predict.main([str(ckpt), str(tmp_path / "manifest.csv"), "--out-dir", str(out)])


def test_bad_models_and_manifests_get_clear_errors(damil_run, ct_dir, tmp_path):
    run, dm = damil_run
    ckpt = next((run / "checkpoints").glob("best-*.ckpt"))
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert checkpoint["label_manifest"]["task"] == "damil"

    # A checkpoint without the training split's statistics cannot preprocess as in training.
    del checkpoint["intensity_stats"]
    torch.save(checkpoint, tmp_path / "no_stats.ckpt")
    with pytest.raises(ScanModelError, match="lacks \\['intensity_stats'\\]"):
        ScanAnalyzer.from_pretrained(tmp_path / "no_stats.ckpt")

    # An object that only unpickling restores: refused unless trusted.
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["network"] = {"base_filters": 2, "depth": 4, "n_scales": 2}
    checkpoint["extra"] = pd.Timestamp("2024-01-01")
    torch.save(checkpoint, tmp_path / "pickled.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="trust_checkpoint=True"):
        ScanAnalyzer.from_pretrained(tmp_path / "pickled.ckpt")
    assert ScanAnalyzer.from_pretrained(tmp_path / "pickled.ckpt", trust_checkpoint=True).space

    # Another task's checkpoint.
    other = torch.load(ckpt, map_location="cpu", weights_only=True)
    other["label_manifest"]["task"] = "spine_resnet18"
    torch.save(other, tmp_path / "spine.ckpt")
    with pytest.raises(ScanModelError, match="'spine_resnet18' checkpoint, not a DaMIL"):
        ScanAnalyzer.from_pretrained(tmp_path / "spine.ckpt")

    analyzer = ScanAnalyzer.from_pretrained(ckpt)
    with pytest.raises(ManifestError, match="missing column\\(s\\) \\['image'\\]"):
        analyzer.predict(pd.DataFrame({"scan_id": ["a"], "patient_id": ["p"]}))
    # An atlas-at-inference model (Table S2 D) needs the atlas segmentation per scan.
    atlas_dir = tmp_path / "atlas_run" / "checkpoints"
    atlas_dir.mkdir(parents=True)
    atlas = torch.load(ckpt, map_location="cpu", weights_only=True)
    atlas["hyper_parameters"]["inference_regions"] = "atlas"
    torch.save(atlas, atlas_dir / "best-epoch00.ckpt")
    with pytest.raises(ManifestError, match="needs a region_mask column"):
        ScanAnalyzer.from_pretrained(atlas_dir.parent).predict(_test_manifest(ct_dir, dm))


def test_the_tested_dice_thresholds_travel_with_the_export(damil_run, tmp_path):
    run, _ = damil_run
    copy = tmp_path / "run"
    shutil.copytree(run / "checkpoints", copy / "checkpoints")
    dice = {"dice": {"value": 0.3}, "dice_threshold": {"value": 0.15, "source": "validation"}}
    (copy / "metrics.json").write_text(json.dumps({"test": {"dice:intraparenchymal_hyperdensity": dice}}))
    analyzer = ScanAnalyzer.from_pretrained(copy)
    assert analyzer.dice_thresholds == {"intraparenchymal_hyperdensity": 0.15}
    again = ScanAnalyzer.from_pretrained(analyzer.save_pretrained(tmp_path / "export"))
    assert again.config()["dice_thresholds"] == {"intraparenchymal_hyperdensity": 0.15}
    assert ScanAnalyzer.from_pretrained(run).dice_thresholds == {}  # an untested run has none


def test_prediction_skips_each_damaged_scan_with_its_message_and_predicts_the_rest(
    damil_run, ct_dir, tmp_path
):
    """Issue 21 items 3 and 5, prediction: a slice cut short (found from the headers), a NIfTI holding
    NaN (found when its voxels are loaded) and a scan of which a real MR file (pydicom's MR_small.dcm)
    takes the place are each skipped with one message naming the scan, the file and the fix; the good
    scan is predicted."""
    from pydicom.data import get_testdata_file

    run, dm = damil_run
    good = _test_manifest(ct_dir, dm).head(1)
    scan_dir = tmp_path / "cut"
    shutil.copytree(good["image"].iloc[0], scan_dir)
    victim = sorted(scan_dir.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:-2000])
    source = nib.load(ct_dir / "nifti" / f"{good['scan_id'].iloc[0]}.nii.gz")
    vol = np.asarray(source.dataobj).astype(np.float32)
    vol[10, 10, 3] = np.nan
    nan_path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(vol, source.affine), nan_path)
    mr_dir = tmp_path / "mr"
    mr_dir.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), mr_dir)
    bad = pd.DataFrame(
        {
            "scan_id": ["cut", "nanvox", "mr"],
            "patient_id": ["p1", "p2", "p3"],
            "image": [str(scan_dir), str(nan_path), str(mr_dir)],
        }
    )
    ckpt = next((run / "checkpoints").glob("best-*.ckpt"))
    result = ScanAnalyzer.from_pretrained(ckpt).predict_scans(pd.concat([good, bad], ignore_index=True))
    assert result.table["scan_id"].tolist() == good["scan_id"].tolist()
    skipped = result.skipped.set_index("scan_id")
    assert skipped["reason"].to_dict() == {"cut": "truncated", "nanvox": "non_finite", "mr": "not_ct"}
    for scan_id, words in {
        "cut": (str(scan_dir), f"{victim.name} is truncated", "re-copy"),
        "nanvox": ("scan nanvox", str(nan_path), "1 NaN and 0 infinite voxel(s)", "re-convert"),
        "mr": (str(mr_dir), "MR_small.dcm", "not CT"),
    }.items():
        message = skipped.at[scan_id, "message"]
        assert " Fix: " in message and "Traceback" not in message, message
        for word in words:
            assert word in message, f"{word!r} not in {message}"


def test_thresholds_chosen_on_validation_travel_with_the_export_and_decide_the_positives(
    damil_run, ct_dir, tmp_path
):
    run, dm = damil_run
    analyzer = ScanAnalyzer.from_pretrained(run)
    t = analyzer.space.types[0]
    manifest = _test_manifest(ct_dir, dm).head(3)
    probs = analyzer.predict(manifest)[f"scan__{t}"]
    cut = float(np.median(probs))  # as if model.decision_threshold=validation had chosen it
    analyzer.module.label_thresholds = {f"scan__{t}": {"threshold": cut, "rule": "youden"}}
    again = ScanAnalyzer.from_pretrained(analyzer.save_pretrained(tmp_path / "export"))
    assert (
        again.thresholds[f"scan__{t}"] == cut and again.thresholds[f"scan__{analyzer.space.types[1]}"] == 0.5
    )
    table = again.predict(manifest)
    assert (table[f"scan__{t}_positive"] == (table[f"scan__{t}"] > cut)).all()
    assert table[f"scan__{t}_positive"].sum() == (probs > cut).sum()
