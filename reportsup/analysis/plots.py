"""Plots written to a run's ``plots/`` folder (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
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
    return _save_roc_figure(fig, ax, title, path)


def plot_roc_repeats(groups: Mapping[str, list[tuple]], path: str | Path, title: str) -> Path:
    """Overlaid ROC curves of several experiments, every repeat as a thin line in its experiment's
    colour; the legend gives the mean AUROC over the repeats. ``groups``: ``name: [(y, p), ...]``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    for colour, (name, repeats) in zip(
        plt.rcParams["axes.prop_cycle"].by_key()["color"], groups.items(), strict=False
    ):
        aucs = []
        for i, (y, p) in enumerate(repeats):
            fpr, tpr, _ = roc_curve(y, p)
            aucs.append(roc_auc_score(y, p))
            ax.plot(fpr, tpr, c=colour, lw=0.8, alpha=0.6, label=None if i else name)
        ax.lines[-len(repeats)].set_label(
            f"{name}: mean AUC {sum(aucs) / len(aucs):.3f} ({len(aucs)} repeats)"
        )
    return _save_roc_figure(fig, ax, title, path)


def plot_metric_bars(
    groups: Mapping[str, Mapping[str, Mapping[str, float]]], path: str | Path, title: str
) -> Path:
    """Grouped bars: per metric, each experiment's mean over its repeats with its 95 % CI as whiskers.
    ``groups``: ``name: {metric: {"mean", "ci_low", "ci_high"}}`` (a single run: no whisker)."""
    metrics = list(dict.fromkeys(m for per in groups.values() for m in per))
    width = 0.8 / max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 + 1.1 * len(metrics)), 3.6), dpi=120)
    for i, (name, per) in enumerate(groups.items()):
        x = np.array([j for j, m in enumerate(metrics) if m in per]) + (i - (len(groups) - 1) / 2) * width
        stats = [per[m] for m in metrics if m in per]
        mean = np.array([s["mean"] for s in stats])
        low = np.nan_to_num([s.get("ci_low", np.nan) for s in stats], nan=mean)  # one run: no CI
        high = np.nan_to_num([s.get("ci_high", np.nan) for s in stats], nan=mean)
        ax.bar(x, mean, width, label=name)
        ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.set(xticks=range(len(metrics)), xticklabels=metrics, ylim=(0, 1.05), title=title)
    ax.set_ylabel("mean, 95 % CI over repeats")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def _save_roc_figure(fig: plt.Figure, ax: plt.Axes, title: str, path: str | Path) -> Path:
    """Chance diagonal, axes, legend; saved as ``path`` (folders created)."""
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(counts: Mapping[str, int], path: str | Path, title: str) -> Path:
    """A 2x2 confusion matrix ``{tp, tn, fp, fn}`` with counts and row shares (spine study, Figures 3-4:
    "both in absolute and relative terms"), drawn by scikit-learn's ``ConfusionMatrixDisplay``."""
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(3.6, 3.4), dpi=120)
    disp = ConfusionMatrixDisplay(shares, display_labels=["absent", "present"])
    disp.plot(ax=ax, cmap="Blues", colorbar=False, values_format=".2f", im_kw={"vmin": 0, "vmax": 1})
    names = [["TN", "FP"], ["FN", "TP"]]
    for (i, j), text in np.ndenumerate(disp.text_):
        text.set_text(f"{names[i][j]} {matrix[i, j]}\n{shares[i, j]:.2f}")
    ax.set(title=title, xlabel="predicted", ylabel="reference")
    fig.tight_layout()
    return _save(fig, path)


def plot_occlusion(fused: np.ndarray, maps: Mapping[str, np.ndarray], path: str | Path, title: str) -> Path:
    """The coronal (R) and sagittal (B) views of a fused image ``(3, H, W)`` in [0, 1], each with its
    occlusion map over it (spine study, Figure 6: blue low, red high importance)."""
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 4), dpi=120)
    limit = max(float(np.abs(m).max()) for m in maps.values()) or 1.0
    for ax, (view, channel) in zip(axes, (("coronal", 0), ("sagittal", 2)), strict=True):
        ax.imshow(fused[channel], cmap="gray", vmin=0, vmax=1)
        im = ax.imshow(maps[view], cmap="jet", alpha=0.45, vmin=-limit, vmax=limit)
        ax.set(title=view, xticks=[], yticks=[])
    fig.colorbar(im, ax=axes, shrink=0.8, label="output drop when occluded")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """``fig`` written to ``path`` (folders created) and closed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_precision_recall(curves: Mapping[str, tuple], path: str | Path, title: str) -> Path:
    """Precision-recall curves (issue 22 item 2), one per entry ``name: (y_true, y_prob, ap[, ci_low,
    ci_high])``, from scikit-learn's ``precision_recall_curve``; each set's prevalence, the precision of
    a chance classifier, as a dotted line in its colour: AP means little without it for a rare label."""
    from sklearn.metrics import precision_recall_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    for name, (y, p, ap, *ci) in curves.items():
        precision, recall, _ = precision_recall_curve(np.asarray(y).astype(int), np.asarray(p, dtype=float))
        interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if len(ci) == 2 else ""
        (line,) = ax.step(recall, precision, where="post", label=f"{name}: AP {ap:.3f}{interval}, n={len(y)}")
        ax.axhline(float(np.mean(y)), ls=":", lw=0.8, c=line.get_color())
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_reliability(curves: Mapping[str, tuple], path: str | Path, title: str, n_bins: int = 15) -> Path:
    """Reliability diagram (issue 22 item 2): per entry ``name: (y_true, y_prob, ece[, brier])`` the
    observed frequency against the mean predicted probability in ``n_bins`` equal-width bins
    (scikit-learn's ``calibration_curve``, the bins of the ECE), with the diagonal of perfect
    calibration and, below, how many predictions fall in each bin (empty bins are not drawn)."""
    from sklearn.calibration import calibration_curve

    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(4.5, 5.4), dpi=120, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    edges = np.linspace(0, 1, n_bins + 1)
    for name, (y, p, ece, *rest) in curves.items():
        y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
        observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
        brier = f", Brier {rest[0]:.3f}" if rest else ""
        (line,) = ax.plot(predicted, observed, marker="o", ms=3, label=f"{name}: ECE {ece:.3f}{brier}")
        hist.hist(p, bins=edges, histtype="step", color=line.get_color())
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(ylabel="observed frequency", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper left", fontsize=7)
    hist.set(xlabel="predicted probability", ylabel="n")
    fig.tight_layout()
    return _save(fig, path)
