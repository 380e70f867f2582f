"""Decision thresholds chosen on held-out data: one implementation for every component.

Spine study ("Data Analysis" and Table 3): each finding's cut-off is re-optimised with Youden's J
(sensitivity + specificity - 1) on the model outputs of the refinement set and applied to the test
set. Issue 22 item 3 generalises this to ``model.threshold=validation`` for ALARM, the discretizer and
the spine models, with two further rules a deployment asks for: the highest cut-off that reaches a
target sensitivity (a screening tool must not miss), or the lowest that reaches a target specificity
(a triage tool must not flood). All rules search the thresholds of scikit-learn's ``roc_curve``, as
the paper.

Conventions: a score ``>= cutoff`` is positive (``roc_curve``'s); :func:`strict_threshold` gives the
equivalent ``prob > threshold`` that torchmetrics, ``metrics.json`` and ``reportsup-label`` apply.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.metrics import roc_curve

ThresholdRule = Literal["youden", "sensitivity", "specificity"]
RULES: tuple[str, ...] = ("youden", "sensitivity", "specificity")


def strict_threshold(cutoff: float) -> float:
    """The threshold for ``prob > threshold`` that makes ``prob >= cutoff`` positive (``roc_curve``'s
    convention), in the float32 the probabilities are compared in."""
    return float(np.nextafter(np.float32(cutoff), np.float32(-np.inf)))


def choose_threshold(
    y_true: np.ndarray, y_score: np.ndarray, rule: str = "youden", target: float = 0.9
) -> dict[str, Any]:
    """``{cutoff, threshold, rule, j, sensitivity, specificity[, target]}`` chosen on ``(y_true, y_score)``.

    * ``youden``: maximal Youden's J; ties keep the highest cutoff (the most specific).
    * ``sensitivity``: the highest cutoff whose sensitivity is at least ``target``.
    * ``specificity``: the lowest cutoff whose specificity is at least ``target``.

    ``cutoff`` is ``roc_curve``'s (``score >= cutoff`` positive); ``threshold`` its ``prob > threshold``
    twin (:func:`strict_threshold`). Raises ``ValueError`` naming the problem unless both classes are
    present, the rule is known and a target lies in (0, 1].
    """
    if rule not in RULES:
        raise ValueError(f"threshold rule {rule!r} is not one of {', '.join(RULES)}.")
    if rule != "youden" and not 0 < float(target) <= 1:
        raise ValueError(f"threshold target {target!r} must lie in (0, 1] for the {rule} rule.")
    y = np.asarray(y_true).astype(int)
    s = np.asarray(y_score, dtype=float)
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"choosing a threshold needs positive and negative cases; only {len(y)} case(s) of one class "
            "are present."
        )
    # every distinct score is a candidate: the default drop_intermediate=True removes points inside
    # straight ROC segments, among them the highest cut-off that reaches a target sensitivity
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    finite = np.isfinite(thresholds)  # the first threshold is +inf: nothing positive
    j = tpr - fpr
    candidates = np.flatnonzero(finite)
    if rule == "youden":
        best = int(candidates[np.argmax(j[candidates])])  # argmax: the first, i.e. highest cutoff
    elif rule == "sensitivity":
        # tpr rises as the cutoff falls: the first (highest) cutoff reaching the target
        best = int(candidates[np.argmax(tpr[candidates] >= target)])
    else:
        # specificity = 1 - fpr falls as the cutoff falls: the last (lowest) cutoff still reaching it
        ok = candidates[(1 - fpr[candidates]) >= target]
        best = int(ok[-1]) if len(ok) else int(candidates[0])
    out: dict[str, Any] = {
        "cutoff": float(thresholds[best]),
        "threshold": strict_threshold(float(thresholds[best])),
        "rule": rule,
        "j": float(j[best]),
        "sensitivity": float(tpr[best]),
        "specificity": float(1 - fpr[best]),
    }
    if rule != "youden":
        out["target"] = float(target)
    return out


def youden_cutoff(y_true: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    """``{cutoff, j, sensitivity, specificity}`` at the threshold maximising Youden's J (the spine
    study's cut-offs; :func:`choose_threshold` with ``rule="youden"``).

    A score ``>= cutoff`` is positive (``roc_curve``'s convention). Ties of J keep the highest cutoff
    (the most specific). Raises ``ValueError`` unless both classes are present.
    """
    res = choose_threshold(y_true, y_score, "youden")
    return {k: res[k] for k in ("cutoff", "j", "sensitivity", "specificity")}
