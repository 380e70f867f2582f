"""Plots written to a run's ``plots/`` folder (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchmetrics.functional.classification import binary_roc  # noqa: E402


def plot_roc(curves: Mapping[str, tuple], path: str | Path, title: str) -> Path:
    """ROC curves, one per entry ``name: (y_true, y_prob, auroc[, ci_low, ci_high])``, as in the paper's
    Figs. 3 and 6 (AUROC and its 95 % CI in the legend)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    for name, (y, p, auc, *ci) in curves.items():
        fpr, tpr, _ = binary_roc(
            torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
        )
        interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if len(ci) == 2 else ""
        ax.plot(fpr.numpy(), tpr.numpy(), label=f"{name}: AUC {auc:.3f}{interval}, n={len(y)}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
