"""DaMILEvaluator.score_set on hand-made outputs (no training): the weighted-macro AUROCs of Tables S6/S7,
the Dice CIs (the DaMIL maps' and, through the same evaluator, damil_gradcam's) and the prioritization
entries land in metrics.json's layout next to the micro AUROCs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lightning_modules.crossdl.damil.dice_threshold import binned_auroc, fixed_thresholds
from lightning_modules.crossdl.damil.evaluation import DaMILEvaluator
from reportsup.contracts.labels.crossdl import LabelSpace


def _fake_run(n: int = 40, seed: int = 0):
    space = LabelSpace.from_config()
    n_r, n_t = len(space.anatomical_regions), len(space.types)
    rng = np.random.default_rng(seed)
    region_y = (rng.random((n, n_r, n_t)) < 0.05).astype(float)
    region_y[::3] = 0  # a third of the scans are normal
    region_p = np.clip(0.4 * region_y + 0.6 * rng.random((n, n_r, n_t)), 0, 1)
    scan_y, scan_p = region_y.max(1), region_p.max(1)
    dice = np.where(scan_y > 0, rng.beta(2, 3, (n, n_t)), np.nan)
    dice[:, 3] = np.nan
    dice[0, 3] = 0.4  # one scan only has voxels of the last type: no CI
    gathered = {
        "index": np.arange(n),
        "probs": np.concatenate([region_p.reshape(n, -1), scan_p], 1),
        "targets": np.concatenate([region_y.reshape(n, -1), scan_y], 1),
        "unclear": np.zeros(n),
        "dice": dice,
    }
    table = pd.DataFrame(
        {"scan_id": [f"HCT{i:03d}" for i in range(n)], "patient_id": [f"P{i}" for i in range(n)]}
    )
    trainer = SimpleNamespace(datamodule=SimpleNamespace(test_table=lambda name: table), loggers=[])
    module = SimpleNamespace(
        space=space, n_regions=n_r, n_types=n_t, dice_thresholds=fixed_thresholds(0.5, n_t)
    )
    return trainer, module, gathered, (region_y, region_p, scan_y, scan_p, dice)


def test_score_set_reports_weighted_macro_dice_cis_and_prioritization(tmp_path):
    trainer, module, gathered, (region_y, region_p, scan_y, scan_p, dice) = _fake_run()
    evaluator = DaMILEvaluator(str(tmp_path), n_bootstrap=100, seed=0)
    out = evaluator.score_set(trainer, module, "test", gathered)
    types = module.space.types
    for j, t in enumerate(types):
        wm = out[f"weighted_macro:{t}"]["auroc"]
        assert wm["value"] == pytest.approx(
            roc_auc_score(region_y[:, :, j], region_p[:, :, j], average="weighted")
        )
        assert wm["ci_low"] <= wm["value"] <= wm["ci_high"]
        assert f"type:{t}" in out  # the micro average stays beside it
    cells_y, cells_p = region_y.reshape(len(region_y), -1), region_p.reshape(len(region_p), -1)
    assert out["weighted_macro"]["auroc"]["value"] == pytest.approx(
        roc_auc_score(cells_y, cells_p, average="weighted")
    )
    assert out["scan_weighted_macro"]["auroc"]["value"] == pytest.approx(
        roc_auc_score(scan_y, scan_p, average="weighted")
    )
    for j, t in enumerate(types[:3]):
        d = out[f"dice:{t}"]["dice"]
        finite = dice[:, j][np.isfinite(dice[:, j])]
        assert d["value"] == pytest.approx(finite.mean()) and d["n_scans"] == len(finite)
        assert d["ci_low"] <= d["value"] <= d["ci_high"] and d["n_bootstrap_valid"] == 100
    lone = out[f"dice:{types[3]}"]["dice"]
    assert lone["value"] == pytest.approx(0.4) and lone["n_scans"] == 1
    assert np.isnan(lone["ci_low"]) and "ci_note" in lone
    assert out["prioritization:any"]["p_value"]["value"] < 0.05
    evaluator.metrics = {"test": out}
    headline = evaluator.headline()["test"]
    assert {"weighted_macro", "scan_weighted_macro", f"weighted_macro:{types[0]}"} <= set(headline)


def test_voxel_histograms_give_the_exact_voxel_auroc_inside_the_head():
    """Issue 20: the voxel-level AUROC from per-scan binned counts equals sklearn's on the same voxels
    (up to the 256 bins), counts only voxels inside the head, and is NaN for a scan without voxel mask."""
    from sklearn.metrics import roc_auc_score

    from lightning_modules.crossdl.damil.dice_threshold import binned_auroc, voxel_histograms

    torch.manual_seed(0)
    maps = torch.rand(2, 2, 6, 6, 4)
    truth = (torch.rand(2, 2, 6, 6, 4) < 0.2).to(torch.uint8)
    maps = (maps + 0.5 * truth).clamp(0, 1)  # lesion voxels rank higher, not perfectly
    regions = torch.ones(2, 1, 6, 6, 4, dtype=torch.long)
    regions[:, :, 0] = 0  # the first row of voxels is outside the head: not counted
    batch = {"voxel_mask": truth, "region_mask": regions, "has_voxel_mask": torch.tensor([True, False])}
    hist = voxel_histograms(batch, maps)
    assert hist.shape == (2, 2, 2, 256) and torch.isnan(hist[1]).all()
    inside = regions[0, 0] > 0
    assert hist[0, 0].sum() == inside.sum()
    for j in range(2):
        expected = roc_auc_score(truth[0, j][inside].numpy(), maps[0, j][inside].numpy())
        assert abs(binned_auroc(hist[0, j].numpy()) - expected) < 0.01
    assert np.isnan(binned_auroc(np.array([[5.0, 0.0], [0.0, 0.0]])))  # no positive voxel
    assert binned_auroc(np.array([[3.0, 0.0], [0.0, 2.0]])) == 1.0  # every positive above every negative
    assert binned_auroc(np.array([[1.0, 1.0], [1.0, 1.0]])) == 0.5


def test_score_set_reports_the_voxel_auroc_of_scans_with_voxel_masks(tmp_path):
    trainer, module, gathered, _ = _fake_run(n=6)
    n_t, bins = module.n_types, 4
    hist = np.zeros((6, n_t, 2, bins))
    hist[:, :, 0] = [40, 30, 20, 10]  # negatives mostly in low bins
    hist[:, 0, 1] = [0, 1, 2, 3]  # type 0: positives mostly in high bins
    hist[:, 1, 1] = 0  # type 1: no lesion voxels anywhere -> no entry
    hist[0] = np.nan  # a scan without voxel mask is left out
    gathered["voxel_hist"] = hist.reshape(6, -1)
    out = DaMILEvaluator(str(tmp_path), n_bootstrap=50, seed=0).score_set(trainer, module, "test", gathered)
    types = module.space.types
    voxel = out[f"voxel:{types[0]}"]
    assert voxel["n_scans"]["value"] == 5 and voxel["n_positive_voxels"]["value"] == 30
    assert (
        voxel["auroc"]["value"] == pytest.approx(binned_auroc(hist[1:, 0].sum(0)))
        and voxel["auroc"]["value"] > 0.7
    )
    assert f"voxel:{types[1]}" not in out
