"""DaMILEvaluator.score_set on hand-made outputs (no training): the weighted-macro AUROCs of Tables S6/S7,
the Dice CIs (the DaMIL maps' and, through the same evaluator, damil_gradcam's) and the prioritization
entries land in metrics.json's layout next to the micro AUROCs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from lightning_modules.crossdl.damil.dice_threshold import fixed_thresholds
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
