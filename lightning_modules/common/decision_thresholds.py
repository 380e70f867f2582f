"""Decision thresholds chosen on the validation set, for every component's module (issue 22 item 3).

The papers binarise at 0.5 (ALARM, the discretizer, DaMIL's region x type cells) or re-optimise each
cut-off on held-out outputs with Youden's J (spine study, "Data Analysis"). A module that mixes in
:class:`ValidationThresholds` takes ``threshold`` (a number, or ``"validation"``), ``threshold_rule``
and ``threshold_target``; with ``"validation"`` it keeps its validation outputs, chooses each label's
threshold after every validation epoch (:func:`choose_label_thresholds`, rules in
:mod:`reportsup.analysis.youden`) and holds them in :attr:`label_thresholds`, which the checkpoint's
label manifest carries (so ``reportsup-label``, ``reportsup-damil-predict`` and the Python API apply
them) and which the test evaluators score next to 0.5 (``<set>@val_threshold`` in ``metrics.json``).

One implementation serves the report models (:class:`~lightning_modules.common.report_model.LabelClassifier`)
and DaMIL (:class:`~lightning_modules.crossdl.damil.module.DaMILModule`, whose ``model.threshold`` is
the paper's *t* of the top-k count, so its decision threshold is ``model.decision_threshold``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from reportsup.analysis.youden import RULES, choose_threshold

VALIDATION = "validation"  # <key>=validation: per-label thresholds chosen on the validation set


def choose_label_thresholds(
    labels: Sequence[str], targets: Any, probs: Any, rule: str = "youden", target: float = 0.9
) -> dict[str, dict[str, Any]]:
    """``{label: choose_threshold(...)}`` on the known targets of each column. Labels whose validation
    targets hold one class only get no threshold (they keep the fixed one): one warning names them all."""
    chosen: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    targets, probs = np.asarray(targets), np.asarray(probs)
    for j, label in enumerate(labels):
        y, p = targets[:, j], probs[:, j]
        known = ~np.isnan(y)
        try:
            chosen[label] = choose_threshold(y[known], p[known], rule, target)
        except ValueError:
            skipped.append(label)
    if skipped:
        shown = ", ".join(f"'{s}'" for s in skipped[:12]) + (
            f" and {len(skipped) - 12} more" if len(skipped) > 12 else ""
        )
        rank_zero_warn(
            f"[reportsup] thresholds chosen on validation: no threshold for {len(skipped)} label(s) whose "
            f"validation cases are all of one class ({shown}); they keep 0.5. Give the validation split "
            "positives and negatives of them (data.split.stratify=true, or a larger validation split)."
        )
    return chosen


class ValidationThresholds:
    """Mixin for a LightningModule: decision thresholds fixed, or chosen on every validation epoch.

    Call :meth:`init_decision_threshold` in ``__init__``, :meth:`keep_validation_outputs` in
    ``validation_step`` and :meth:`choose_validation_thresholds` from ``on_validation_epoch_end``."""

    # class-level defaults: a host that never calls init_decision_threshold has a fixed threshold
    choose_on_validation: bool = False
    threshold_rule: str = "youden"
    threshold_target: float = 0.9
    #: ``{label: choose_threshold(...)}`` chosen on validation (empty with a fixed threshold; only ever
    #: replaced, never changed in place, so the class-level empty dict is not shared state)
    label_thresholds: dict[str, dict[str, Any]] = {}  # noqa: RUF012

    def init_decision_threshold(
        self,
        threshold: float | str,
        rule: str = "youden",
        target: float = 0.9,
        key: str = "model.threshold",
    ) -> float:
        """Check the settings (errors name ``key``) and return the fixed threshold: the number given, or
        0.5 with ``"validation"`` (the metrics at 0.5 stay reported next to the chosen ones)."""
        self.choose_on_validation = str(threshold).strip().lower() == VALIDATION
        if not self.choose_on_validation:
            try:
                threshold = float(threshold)
            except ValueError:
                raise ValueError(
                    f"{key}={threshold!r}: give a number in [0, 1] (e.g. 0.5) or '{VALIDATION}'."
                ) from None
        if rule not in RULES:
            raise ValueError(f"model.threshold_rule={rule!r}: use one of {', '.join(RULES)}.")
        if rule != "youden" and not 0 < float(target) <= 1:
            raise ValueError(f"model.threshold_target={target!r}: give a rate in (0, 1], e.g. 0.9.")
        self.threshold_rule = rule
        self.threshold_target = float(target)
        self.label_thresholds = {}
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        return 0.5 if self.choose_on_validation else float(threshold)

    def keep_validation_outputs(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        """Keep one validation batch's (N, labels) probabilities and targets (NaN: unknown)."""
        if self.choose_on_validation:
            self._val_outputs.append((probs.detach().float().cpu(), targets.detach().float().cpu()))

    def choose_validation_thresholds(self, labels: Sequence[str]) -> None:
        """Each label's threshold on this epoch's validation outputs (all ranks' under DDP), not during
        the sanity check, whose few batches would decide nothing."""
        outputs, self._val_outputs = getattr(self, "_val_outputs", []), []
        trainer = self.trainer  # type: ignore[attr-defined]
        if not self.choose_on_validation or not outputs or trainer.sanity_checking:
            return
        probs = torch.cat([p for p, _ in outputs])
        targets = torch.cat([t for _, t in outputs])
        if trainer.world_size > 1:  # uneven shards: gather Python objects, not equal-size tensors
            parts: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(parts, (probs, targets))
            probs = torch.cat([p for p, _ in parts])
            targets = torch.cat([t for _, t in parts])
        self.label_thresholds = choose_label_thresholds(
            labels, targets.numpy(), probs.numpy(), self.threshold_rule, self.threshold_target
        )
