"""reportsup.SpineImageClassifier: a SpineResNet trained one step and saved by Lightning loads without
unpickling and predicts what the network gives on views read, resized, fused and normalised as in
training; Youden cut-offs of the run label the sessions; the export reloads to the same outputs."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from datamodules.spine.datamodule import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FusedViewsDataset,
    SpineDataError,
    pair_views,
)
from datamodules.spine.radiographs import fuse_views, read_radiograph, resize_view
from lightning_modules.common.checkpoints import UnsafeCheckpointError
from lightning_modules.common.label_manifest import CheckpointManifestError
from lightning_modules.spine.image_module import SpineResNet
from reportsup import SpineImageClassifier

FINDINGS = ["scoliosis", "fractures"]
PREPROCESSING = {"image_size": [32, 24], "green_channel": "mean", "normalisation": "imagenet"}


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    """A views table of 4 sessions (PNG radiographs of different sizes, paths relative to the table)."""
    folder = tmp_path_factory.mktemp("spine_views")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        for view, shape in (("coronal", (60, 40)), ("sagittal", (50, 45))):
            name = f"s{i}_{view}.png"
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
            rows.append({"session_id": f"s{i}", "patient_id": f"p{i // 2}", "view": view, "image": name})
    pd.DataFrame(rows).to_csv(folder / "views.csv", index=False)
    return folder / "views.csv"


@pytest.fixture(scope="module")
def spine_run(views, tmp_path_factory):
    """A run folder with checkpoints/best-epoch00.ckpt written by Lightning after one SGD step."""
    run = tmp_path_factory.mktemp("spine_run")
    torch.manual_seed(0)
    model = SpineResNet(FINDINGS, torch.optim.SGD, weights=None, image_preprocessing=PREPROCESSING)
    sessions = pair_views(pd.read_csv(views, dtype=str), views)
    targets = np.array([[0, 1], [1, 0], [1, 1], [0, 0]], dtype=float)
    data = FusedViewsDataset(sessions, targets, PREPROCESSING["image_size"], "mean")
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=4))
    trainer.save_checkpoint(run / "checkpoints" / "best-epoch00.ckpt")
    return run, model.eval()


def _expected(model: SpineResNet, views) -> np.ndarray:
    """The network on each session's views prepared step by step as the training pipeline does."""
    table = pd.read_csv(views, dtype=str)
    normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    images = []
    for sid in sorted(table["session_id"].unique()):
        path = {r.view: views.parent / r.image for r in table[table["session_id"] == sid].itertuples()}
        coronal, sagittal = (
            resize_view(read_radiograph(path[v]), PREPROCESSING["image_size"])
            for v in ("coronal", "sagittal")
        )
        images.append(normalize(fuse_views(coronal, sagittal, "mean")))
    with torch.no_grad():
        return torch.sigmoid(model(torch.stack(images))).numpy()


def test_run_folder_predictions_equal_the_networks_own(spine_run, views):
    run, model = spine_run
    classifier = SpineImageClassifier.from_pretrained(run)  # -> checkpoints/best-epoch00.ckpt
    assert classifier.image_size == (32, 24) and classifier.green_channel == "mean"
    table = classifier.predict(views, batch_size=3)  # two batches
    assert list(table.columns) == [
        "session_id",
        "patient_id",
        "scoliosis_prob",
        "scoliosis",
        "fractures_prob",
        "fractures",
    ]
    assert table["session_id"].tolist() == ["s0", "s1", "s2", "s3"]
    probs = table[["scoliosis_prob", "fractures_prob"]].to_numpy()
    np.testing.assert_allclose(probs, _expected(model, views), rtol=1e-5, atol=1e-6)
    assert (table["scoliosis"] == (probs[:, 0] > 0.5)).all()


def test_youden_cutoffs_of_the_run_label_sessions_and_travel_with_the_export(spine_run, views, tmp_path):
    run, model = spine_run
    p = _expected(model, views)[:, 0]
    cutoff = float(np.sort(p)[2])  # two sessions at or above it
    (run / "youden_cutoffs.json").write_text(
        json.dumps({"cutoff_set": "refinement", "cutoffs": {"scoliosis": {"cutoff": cutoff, "j": 0.5}}})
    )
    try:
        classifier = SpineImageClassifier.from_pretrained(run)
        table = classifier.predict(views)
        assert "fractures_youden" not in table.columns  # no cut-off for it
        assert table["scoliosis_youden"].tolist() == (p >= cutoff).astype(int).tolist()
        assert table["scoliosis_youden"].sum() == 2

        folder = classifier.save_pretrained(tmp_path / "export")
        assert sorted(x.name for x in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
        card = (folder / "README.md").read_text()
        assert "SpineImageClassifier.from_pretrained" in card and "does not look at images" not in card
        config = json.loads((folder / "config.json").read_text())["reportsup"]
        assert config["task"] == "spine_resnet18" and config["labels"] == FINDINGS
        assert config["youden_cutoffs"] == {"scoliosis": cutoff}
        again = SpineImageClassifier.from_pretrained(folder)
        pd.testing.assert_frame_equal(again.predict(views), table)
        resaved = again.save_pretrained(tmp_path / "resaved")  # an export re-saved keeps its card
        assert (resaved / "README.md").read_text() == card
    finally:
        (run / "youden_cutoffs.json").unlink()


def test_a_dataframe_views_table_and_its_errors(spine_run, views, monkeypatch):
    run, _ = spine_run
    classifier = SpineImageClassifier.from_pretrained(run)
    table = pd.read_csv(views, dtype=str)
    monkeypatch.chdir(views.parent)  # a DataFrame's relative paths are relative to the working directory
    pd.testing.assert_frame_equal(classifier.predict(table), classifier.predict(views))
    with pytest.raises(SpineDataError, match="session s3 \\(rows 8\\) has no sagittal view"):
        classifier.predict(table.iloc[:-1])
    with pytest.raises(SpineDataError, match="missing column\\(s\\) \\['view'\\]"):
        classifier.predict(table.drop(columns="view"))


def test_checkpoints_that_cannot_be_used_are_refused_with_the_reason(spine_run, tmp_path):
    run, _ = spine_run
    ckpt = run / "checkpoints" / "best-epoch00.ckpt"
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain content: no unpickling

    checkpoint["label_manifest"]["image_preprocessing"] = {}
    torch.save(checkpoint, tmp_path / "no_size.ckpt")
    with pytest.raises(CheckpointManifestError, match="image_preprocessing.image_size"):
        SpineImageClassifier.from_pretrained(tmp_path / "no_size.ckpt")

    checkpoint["label_manifest"]["task"] = "damil"
    torch.save(checkpoint, tmp_path / "damil.ckpt")
    with pytest.raises(CheckpointManifestError, match="not a spine_resnet18 checkpoint"):
        SpineImageClassifier.from_pretrained(tmp_path / "damil.ckpt")

    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["optimizer"] = torch.optim.SGD  # a class: only unpickling restores it
    torch.save(checkpoint, tmp_path / "pickled.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="torch.optim.sgd.SGD"):
        SpineImageClassifier.from_pretrained(tmp_path / "pickled.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="trust_checkpoint=True"):
        SpineResNet.from_checkpoint(tmp_path / "pickled.ckpt")
    assert SpineResNet.from_checkpoint(tmp_path / "pickled.ckpt", trust_checkpoint=True).labels == FINDINGS
