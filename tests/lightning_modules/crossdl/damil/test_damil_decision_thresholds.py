"""DaMIL's decision thresholds chosen on the validation scans (issue 22 item 3): one implementation with
the report models (lightning_modules.common.decision_thresholds), carried by the checkpoint's label
manifest, scored at test as ``<set>@val_threshold`` and applied by the API's ``scan__<type>_positive``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lightning_modules.common.label_manifest import label_thresholds
from lightning_modules.crossdl.damil.ablations import DaMILClassifierModule
from lightning_modules.crossdl.damil.evaluation import DaMILEvaluator
from lightning_modules.crossdl.damil.module import DaMILModule, prediction_columns
from reportsup.analysis.youden import choose_threshold
from tests.lightning_modules.crossdl.damil.test_damil_evaluation_metrics import _fake_run

TINY = {"base_filters": 2, "depth": 4, "n_scales": 2}


def _validation_epoch(module, n: int = 12, seed: int = 0):
    """Feed ``n`` validation scans in batches of 3 and end the epoch; return what was fed."""
    rng = np.random.default_rng(seed)
    n_r, n_t = module.n_regions, module.n_types
    scan_y = np.zeros((n, n_t))
    scan_y[: n // 2, 0] = 1  # type 0: half the scans; the other types: none (one class only)
    # float32: the precision the module keeps its outputs in
    scan_p = np.clip(0.3 * scan_y + 0.6 * rng.random((n, n_t)), 0, 1).astype(np.float32)
    region_y = np.zeros((n, n_r, n_t))
    region_y[: n // 2, 0, 0] = 1  # cell (region 0, type 0) follows type 0
    region_p = rng.random((n, n_r, n_t)).astype(np.float32)
    unclear = np.zeros(n, dtype=bool)
    unclear[-1] = True  # its cells are unknown, its scan labels count
    module._trainer = SimpleNamespace(sanity_checking=False, world_size=1)
    module.on_validation_epoch_start()
    for s in range(0, n, 3):
        batch = {
            "scan_labels": torch.tensor(scan_y[s : s + 3]),
            "region_labels": torch.tensor(region_y[s : s + 3]),
            "unclear": torch.tensor(unclear[s : s + 3]),
        }
        module.keep_scan_validation_outputs(
            batch, torch.tensor(region_p[s : s + 3]), torch.tensor(scan_p[s : s + 3])
        )
    with pytest.warns(UserWarning, match=r"no threshold for \d+ label\(s\) whose validation cases are all"):
        module.on_validation_epoch_end()
    return scan_y, scan_p, region_y, region_p, unclear


def test_thresholds_are_chosen_per_column_on_validation_and_travel_in_the_manifest():
    module = DaMILModule(network=TINY, decision_threshold="validation")
    assert module.choose_on_validation and module.decision_threshold == 0.5
    scan_y, scan_p, region_y, region_p, unclear = _validation_epoch(module)
    space = module.space
    t0 = space.types[0]
    first_cell = f"{space.anatomical_regions[0]}__{t0}"
    # only the columns with both classes on validation: scan type 0 and its one cell
    assert set(module.label_thresholds) == {f"scan__{t0}", first_cell}
    assert module.label_thresholds[f"scan__{t0}"] == choose_threshold(scan_y[:, 0], scan_p[:, 0])
    known = ~unclear  # the unclear scan's cells are left out, as in the test metrics
    assert module.label_thresholds[first_cell] == choose_threshold(
        region_y[known, 0, 0], region_p[known, 0, 0]
    )
    manifest = module.label_manifest()
    assert manifest["labels"] == prediction_columns(space) and manifest["threshold"] == 0.5
    applied = label_thresholds(manifest)
    assert applied[f"scan__{t0}"] == module.label_thresholds[f"scan__{t0}"]["threshold"]
    assert applied[f"scan__{space.types[1]}"] == 0.5  # no choice: the fixed threshold
    # the checkpoint carries them; a module loading it restores them (testing scores at them)
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    again = DaMILModule(network=TINY, decision_threshold="validation")
    again.on_load_checkpoint(checkpoint)
    assert again.label_thresholds == module.label_thresholds


def test_a_fixed_decision_threshold_chooses_nothing_and_the_ablation_classifier_has_its_own_task():
    module = DaMILModule(network=TINY)
    _ = module.label_manifest()
    module._trainer = SimpleNamespace(sanity_checking=False, world_size=1)
    module.on_validation_epoch_start()
    module.keep_scan_validation_outputs(
        {"scan_labels": torch.ones(1, 4), "region_labels": torch.ones(1, 17, 4), "unclear": torch.zeros(1)},
        torch.rand(1, 17, 4),
        torch.rand(1, 4),
    )
    module.on_validation_epoch_end()
    assert module.label_thresholds == {} and "thresholds" not in module.label_manifest()
    classifier = DaMILClassifierModule(network=TINY, decision_threshold=0.3)
    assert classifier.label_manifest()["task"] == "damil_ablation_classifier"
    assert classifier.label_manifest()["threshold"] == 0.3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": "validation"}, r"model\.threshold='validation': for DaMIL this is t of the top-k"),
        ({"decision_threshold": "best"}, r"model\.decision_threshold='best': give a number"),
        ({"decision_threshold": "validation", "threshold_rule": "f1"}, r"model\.threshold_rule='f1'"),
    ],
)
def test_bad_threshold_settings_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DaMILModule(network=TINY, **kwargs)


def test_scan_metrics_are_reported_again_at_the_chosen_thresholds(tmp_path):
    trainer, module, gathered, (_, _, scan_y, scan_p, _) = _fake_run()
    t0 = module.space.types[0]
    chosen = choose_threshold(scan_y[:, 0], scan_p[:, 0], "specificity", 0.9)
    module.label_thresholds = {f"scan__{t0}": chosen}
    evaluator = DaMILEvaluator(str(tmp_path), n_bootstrap=50, seed=0)
    metrics = evaluator.evaluate(trainer, module, {"test": gathered})
    at = metrics["test@val_threshold"][f"scan:{t0}"]
    assert at["threshold"]["value"] == chosen["threshold"]
    assert "auroc" not in at  # threshold-free metrics are not repeated
    negative = scan_y[:, 0] == 0
    assert at["specificity"]["value"] == pytest.approx(
        (scan_p[negative, 0] <= chosen["threshold"]).sum() / negative.sum()
    )
    # the maxima over 17 cells are mostly above 0.5: the chosen threshold is far more specific
    assert at["specificity"]["value"] >= 0.9 > metrics["test"][f"scan:{t0}"]["specificity"]["value"]
    assert list(metrics) == ["test", "test@val_threshold"]
