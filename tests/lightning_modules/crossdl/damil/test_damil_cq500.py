"""``experiment=damil_cq500`` end to end (Liu et al. 2023, Figure 6): a few-step analyzer checkpoint
tested on a CQ500-layout folder of phantoms; metrics.json holds the five AUROCs with CIs."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch

from datamodules.crossdl.head_ct.cq500 import CQ500_LABELS
from datamodules.crossdl.head_ct.datamodule import HeadCTDataModule
from datamodules.synthetic.datasets.cq500_phantoms import write_cq500_phantoms
from lightning_modules.common.label_manifest import CheckpointManifestError
from lightning_modules.crossdl.damil.module import DaMILModule
from tests.conftest import SMALL_CT, run_train


def _tiny_checkpoint(ct_dir, tmp_path):
    """A DaMIL analyzer trained for 2 steps on the synthetic head-CT set, saved as a run's checkpoint."""
    dm = HeadCTDataModule(
        str(ct_dir / "manifest.csv"),
        labels_path=str(ct_dir / "reports.csv"),
        region_mask_column="true_region_mask",
        spatial_size=(32, 32, 16),
        cache_dir=str(tmp_path / "cache"),
        split={"seed": 0, "fractions": [0.6, 0.2, 0.2]},
        output_dir=str(tmp_path / "run"),
    )
    module = DaMILModule(network={"base_filters": 4, "depth": 4}, dice_threshold=0.5)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,  # the one checkpoint is saved below, nothing in the working directory
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt, module


@pytest.mark.slow  # ~40 s: 8 phantoms rendered, a 2-step training, a train.py subprocess
def test_damil_cq500_scores_five_haemorrhage_labels_with_cis(ct_dir, tmp_path):
    ckpt, trained = _tiny_checkpoint(ct_dir, tmp_path)
    rebuilt = DaMILModule.from_checkpoint(str(ckpt), {"dice_threshold": 0.3})
    assert rebuilt.hparams.network == trained.hparams.network and rebuilt.hparams.dice_threshold == 0.3
    assert all(
        torch.equal(a, b)
        for a, b in zip(rebuilt.state_dict().values(), trained.state_dict().values(), strict=True)
    )
    cq500 = write_cq500_phantoms(tmp_path / "CQ500", **SMALL_CT)
    overrides = [
        "experiment=damil_cq500",
        f"ckpt_path={ckpt}",
        f"data.holdouts.cq500.cq500_root={cq500}",
        f"paths.data_dir={tmp_path / 'data'}",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "callbacks.evaluator.n_bootstrap=100",
        "callbacks.map_writer.max_scans=1",
    ]
    run_train(*overrides)
    run = ckpt.parent.parent  # the checkpoint's run directory
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics) == ["cq500"]
    for label in CQ500_LABELS:
        auroc = metrics["cq500"][f"cq500:{label}"]["auroc"]
        assert 0 <= auroc["ci_low"] <= auroc["value"] <= auroc["ci_high"] <= 1, (label, auroc)
    assert (run / "plots" / "roc_damil_haemorrhage_cq500.png").stat().st_size > 0
    pred = pd.read_csv(run / "predictions_cq500.csv")
    # the truth is the readers' majority (reader 3 contradicts the others on every odd phantom)
    assert pred["intraparenchymal_true"].tolist() == [0, 1, 0, 0, 1, 0, 0, 1]
    assert pred["right_true"].tolist() == [0, 0, 1, 0, 1, 0, 1, 1]
    assert (
        pred["intracranial_prob"] == pred[["intraparenchymal_prob", "extraparenchymal_prob"]].max(1)
    ).all()
    # the model's own preprocessing and training statistics, from its checkpoint
    summary = json.loads((run / "holdouts" / "data_summary.json").read_text())
    assert summary["preprocessing"]["spatial_size"] == [32, 32, 16] and summary["sizes"] == {"cq500": 8}

    # A scan folder without a reads.csv row stops the run with its name and the fix.
    reads = pd.read_csv(cq500 / "reads.csv")
    reads.iloc[1:].to_csv(cq500 / "reads.csv", index=False)
    proc = run_train(*overrides, check=False)
    assert proc.returncode != 0
    assert "CQ500CT0 CQ500CT0 has no row in" in proc.stderr + proc.stdout and "missing=skip" in proc.stderr


def test_from_checkpoint_refuses_what_is_not_a_damil_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path=<run>/checkpoints"):
        DaMILModule.from_checkpoint("")
    path = tmp_path / "other.ckpt"
    torch.save({"label_manifest": {"task": "report_label"}, "state_dict": {}}, path)
    with pytest.raises(CheckpointManifestError, match="not a DaMIL analyzer's"):
        DaMILModule.from_checkpoint(str(path))
