"""Cut-off optimisation with Youden's J statistic (spine study, "Data Analysis" and Table 3).

The paper re-optimises each finding's decision threshold on the model outputs for the 481
human-annotated refinement couples and applies it to the test set, which balances sensitivity and
specificity. J = sensitivity + specificity - 1 is maximised over the ROC curve's thresholds
(scikit-learn's ``roc_curve``, as the paper).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve


def youden_cutoff(y_true: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    """``{cutoff, j, sensitivity, specificity}`` at the threshold maximising Youden's J.

    A score ``>= cutoff`` is positive (``roc_curve``'s convention). Ties of J keep the highest cutoff
    (the most specific). Raises ``ValueError`` unless both classes are present.
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(y_score, dtype=float)
    if y.min(initial=1) == y.max(initial=0) or len(np.unique(y)) < 2:
        raise ValueError("Youden's J needs positive and negative cases; only one class is present.")
    fpr, tpr, thresholds = roc_curve(y, s)
    finite = np.isfinite(thresholds)  # the first threshold is +inf: nothing positive
    j = tpr - fpr
    best = int(np.flatnonzero(finite)[np.argmax(j[finite])])
    return {
        "cutoff": float(thresholds[best]),
        "j": float(j[best]),
        "sensitivity": float(tpr[best]),
        "specificity": float(1 - fpr[best]),
    }
