"""Summaries over repeated runs: every metric as mean and 95 % CI across repeats.

Wood et al. 2021 ("Modelling"): "To generate performance confidence intervals, the splitting
procedure was repeated 10 times for each classifier." The CI here is the t-interval of the mean over
repeats (mean +- t_{0.975, n-1} * sd / sqrt(n)); the per-run bootstrap CIs stay in each run's
``metrics.json``. Intervals of metrics bounded to [0, 1] (all of :data:`METRICS`, issue 22's average
precision, PPV, NPV, ECE and Brier score among them) are clipped to it. Everything is read generically:
a test set ``<set>@val_threshold`` (metrics at thresholds chosen on validation) or ``<set>@youden``
is summarised like any other, its ``threshold`` / ``cutoff`` as a mean over repeats with a t-interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import stats

from reportsup.analysis.metrics import METRICS

COUNTS = ("n", "n_positive")  # per-run sizes: shown as means, not as metrics with a CI

RunMetrics = Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]  # set -> label -> metric -> fields


def summarize_runs(
    runs: Iterable[RunMetrics], ci: float = 0.95
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Mean, sd, t-CI and n over runs, for every test set, label and metric present in any run."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        for test_set, per_label in run.items():
            for label, per_metric in per_label.items():
                for metric, fields in per_metric.items():
                    values.setdefault((test_set, label, metric), []).append(float(fields["value"]))
    out: dict[str, Any] = {}
    for (test_set, label, metric), vals in sorted(values.items()):
        arr = np.asarray(vals, dtype=float)
        arr = arr[~np.isnan(arr)]
        n = len(arr)
        mean = float(arr.mean()) if n else float("nan")
        sd = float(arr.std(ddof=1)) if n > 1 else float("nan")
        half = float(stats.t.ppf(0.5 + ci / 2, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
        low, high = mean - half, mean + half
        if metric in METRICS:  # proportions and AUROC live in [0, 1]; a t-interval can step outside
            low, high = max(low, 0.0), min(high, 1.0)
        out.setdefault(test_set, {}).setdefault(label, {})[metric] = {
            "mean": mean,
            "sd": sd,
            "ci_low": low,
            "ci_high": high,
            "n_runs": n,
        }
    return out


def summary_markdown(summary: Mapping[str, Any], title: str = "Summary") -> str:
    """One table per test set: rows = labels, columns = metrics as ``mean [low, high]``."""
    lines = [f"# {title}", ""]
    for test_set, per_label in summary.items():
        present = {m for per_metric in per_label.values() for m in per_metric}
        metrics = [m for m in METRICS if m in present] + sorted(present - set(METRICS))
        n_runs = max(f["n_runs"] for per_metric in per_label.values() for f in per_metric.values())
        lines += [
            f"## {test_set} (n runs = {n_runs})",
            "",
            "| label | " + " | ".join(metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for label, per_metric in per_label.items():
            cells = []
            for m in metrics:
                f = per_metric.get(m)
                if f is None:
                    cells.append("")
                elif m in COUNTS:
                    cells.append(f"{f['mean']:g}")
                else:
                    cells.append(f"{f['mean']:.3f} [{f['ci_low']:.3f}, {f['ci_high']:.3f}]")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def metrics_table(metrics: RunMetrics) -> str:
    """A single run's metrics as a markdown table: ``value [ci_low, ci_high]`` per test set and label."""
    lines = []
    for test_set, per_label in metrics.items():
        for label, per_metric in per_label.items():
            cells = [
                f"{m} {f['value']:.3f} [{f['ci_low']:.3f}, {f['ci_high']:.3f}]"
                if "ci_low" in f
                else f"{m} {f['value']:g}"
                for m, f in per_metric.items()
            ]
            lines.append(f"{test_set:>14} | {label:<26} | " + " | ".join(cells))
    return "\n".join(lines)
