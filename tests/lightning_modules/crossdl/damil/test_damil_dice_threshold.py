"""The localisation Dice's threshold: fixed, or chosen per type on the validation scans."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_modules.crossdl.damil.dice_threshold import (
    THRESHOLD_GRID,
    check_dice_threshold,
    choose_thresholds,
    dice_per_threshold,
)
from lightning_modules.crossdl.damil.module import ScanModelSteps, localisation_dice
from reportsup.contracts.labels.crossdl import LabelSpace

N_TYPES = 2


def _scan(
    lesion_value: float, with_type: tuple[bool, bool], index: int = 0, background: float = 0.1
) -> dict[str, torch.Tensor]:
    """One 8^3 scan whose 'map' is ``background`` everywhere and ``lesion_value`` on a 2^3 cube (both
    types); the voxel mask marks that cube for the types in ``with_type``."""
    maps = torch.full((N_TYPES, 8, 8, 8), background)
    maps[:, 2:4, 2:4, 2:4] = lesion_value
    mask = torch.zeros(N_TYPES, 8, 8, 8)
    for j, present in enumerate(with_type):
        if present:
            mask[j, 2:4, 2:4, 2:4] = 1
    return {
        "image": maps,
        "voxel_mask": mask,
        "index": torch.tensor(index),
        "region_labels": torch.zeros(1, N_TYPES),
        "scan_labels": torch.tensor([float(p) for p in with_type]),
        "unclear": torch.tensor(False),
    }


def _batch(*scans: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in scans]) for k in scans[0]}


def test_dice_per_threshold_counts_only_scans_with_the_type():
    batch = _batch(_scan(0.3, (True, False)), _scan(0.3, (True, True)))
    sums, counts = dice_per_threshold(batch, batch["image"])
    assert counts.tolist() == [2, 1]
    grid = list(THRESHOLD_GRID)
    # Below the background (0.1) everything is positive: Dice 2*8 / (512 + 8); between 0.1 and 0.3 the
    # cube exactly (1 per scan); from 0.3 up nothing (0).
    assert sums[grid.index(0.05), 0] == pytest.approx(2 * 16 / 520)
    assert sums[grid.index(0.2), 0] == pytest.approx(2.0)
    assert sums[grid.index(0.2), 1] == pytest.approx(1.0)
    assert sums[grid.index(0.3), 0] == 0 and sums[grid.index(0.5), 1] == 0


def test_choose_thresholds_takes_the_best_and_keeps_the_fallback_where_nothing_is_known():
    sums = torch.zeros(len(THRESHOLD_GRID), 3)
    sums[3, 0], sums[6, 0] = 1.0, 1.5  # type 0: best at grid[6] (mean 0.75 over 2 scans)
    counts = torch.tensor([2, 0, 4])  # type 1: no validation scan; type 2: Dice 0 everywhere
    chosen = choose_thresholds(sums, counts, fallback=0.5)
    assert chosen.values == [float(THRESHOLD_GRID[6]), 0.5, 0.5]
    assert chosen.sources == ["validation", "fixed", "fixed"]
    assert chosen.validation_dice == [pytest.approx(0.75), None, None]


def test_localisation_dice_uses_each_types_own_threshold():
    batch = _batch(_scan(0.3, (True, True)))
    dice = localisation_dice(batch, batch["image"], torch.tensor([0.2, 0.5]))
    assert dice[0].tolist() == [pytest.approx(1.0), 0.0]


@pytest.mark.parametrize("bad", [0.0, 1.5, "best", None])
def test_a_bad_dice_threshold_names_the_key_and_the_choices(bad):
    with pytest.raises(ValueError, match=r"model\.dice_threshold=.*'validation'"):
        check_dice_threshold(bad)
    assert check_dice_threshold("validation") == "validation" and check_dice_threshold(0.3) == 0.3


class _MapIsTheImage(ScanModelSteps, pl.LightningModule):
    """A 'model' whose abnormality map is its input times one weight: the thresholds are known."""

    def __init__(self, dice_threshold: float | str, scale: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.n_types = N_TYPES
        self.space = LabelSpace.from_config()  # what the checkpoint's label manifest names
        self.scale = torch.nn.Parameter(torch.tensor(scale))
        self.test_dice: list[torch.Tensor] = []

    def on_test_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.test_dice.append(outputs["dice"])

    def predict_scan(self, batch):
        b = len(batch["image"])
        return {
            "region_probs": torch.zeros(b, 1, N_TYPES),
            "scan_probs": batch["image"].flatten(2).amax(-1),
            "regions": torch.zeros(b, 1, 8, 8, 8),
            "abnormality": batch["image"] * self.scale,
        }


class _Scans(pl.LightningDataModule):
    def __init__(self, val: list[dict], test: list[dict]) -> None:
        super().__init__()
        self.val, self.test = val, test

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=2)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=2)


def _trainer(**kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, **kw)


@pytest.mark.parametrize("setting", ["validation", 0.5])
def test_testing_chooses_thresholds_on_validation(setting):
    # Validation: type 0's lesions at 0.3 over a 0.1 background (best: 0.1, the lowest threshold that
    # the background does not exceed; ties go to the lowest);
    # type 1 never present in validation, so it keeps the fixed 0.5.
    val = [_scan(0.3, (True, False), i) for i in range(3)]
    test = [_scan(0.3, (True, True), i) for i in range(2)]
    module = _MapIsTheImage(setting)
    _trainer().test(module, datamodule=_Scans(val, test), verbose=False)
    chosen = module.dice_thresholds
    if setting == "validation":
        assert chosen.values == [0.1, 0.5] and chosen.sources == ["validation", "fixed"]
    else:
        assert chosen.values == [0.5, 0.5] and chosen.sources == ["fixed", "fixed"]
    # test_step scored the test scans at those thresholds: the cube exactly at 0.1, nothing at 0.5.
    dice = torch.cat(module.test_dice).numpy()
    assert np.allclose(dice[:, 0], 1.0 if setting == "validation" else 0.0)
    assert np.allclose(dice[:, 1], 0.0)


def test_thresholds_are_chosen_with_the_tested_checkpoints_weights(tmp_path):
    val = [_scan(0.3, (True, False), i) for i in range(3)]
    data = _Scans(val, val)
    trained = _MapIsTheImage("validation", scale=2.0)  # maps: lesion 0.6, background 0.2
    trainer = _trainer()
    trainer.test(trained, datamodule=data, verbose=False)
    trainer.save_checkpoint(tmp_path / "trained.ckpt")
    fresh = _MapIsTheImage("validation", scale=1.0)  # its own maps would give 0.1
    _trainer().test(fresh, datamodule=data, ckpt_path=str(tmp_path / "trained.ckpt"), verbose=False)
    assert fresh.dice_thresholds.values[0] == 0.2


def test_threshold_search_follows_limit_val_batches_and_skips_unannotated_scans():
    # Batch 1 (2 scans): lesions at 0.3 over 0.1 -> best 0.1. Batches 2-3 (4 scans): lesions at 0.9
    # over 0.5 -> Dice 1 only from 0.5 up; all six scans together: best 0.5 (mean 0.67 against 0.35).
    val = [_scan(0.3, (True, False), i) for i in range(2)]
    val += [_scan(0.9, (True, False), i, background=0.5) for i in range(2, 6)]
    for limit, expected in ((1.0, 0.5), (1, 0.1)):
        module = _MapIsTheImage("validation")
        _trainer(limit_val_batches=limit).test(module, datamodule=_Scans(val, val[:2]), verbose=False)
        assert module.dice_thresholds.values[0] == expected, limit  # limit 1: only the first batch
    batch = _batch(*val[:2])
    batch["has_voxel_mask"] = torch.tensor([True, False])
    _, counts = dice_per_threshold(batch, batch["image"])
    assert counts.tolist() == [1, 0]


def test_validation_thresholds_without_a_datamodule_say_what_to_do():
    test = [_scan(0.3, (True, True), i) for i in range(2)]
    with pytest.raises(ValueError, match="model.dice_threshold=validation .* no datamodule"):
        _trainer().test(
            _MapIsTheImage("validation"), dataloaders=DataLoader(test, batch_size=2), verbose=False
        )
