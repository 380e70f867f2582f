"""Compare finished runs: metrics as mean and 95 % CI over repeats, DeLong tests per repeat.

Wood et al. 2021, Table 3: ALARM and the word2vec baseline on the same test sets, AUC-ROC, accuracy,
sensitivity, specificity and F1, compared with DeLong's test. With repeated splits (10 seeds) the
comparison is made within each repeat, on the same test reports (a paired test): the runs of two
experiments are matched by their split seed, their predictions joined by report id.

Also the per-repeat comparison of test sets inside one run (report labels vs image labels, internal vs
external site): :func:`delong_across_test_sets`, DeLong unpaired for disjoint report sets and paired when
both sets hold the same reports (the paper's image-label evaluation of the same examinations).

Everything reads the DESIGN.md run directory through :mod:`reportsup.contracts.run_dir`:
``.hydra/config.yaml`` (name, seed), ``metrics.json``, ``predictions_<set>.csv`` (``id``, ``<label>_true``,
``<label>_prob``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reportsup.analysis.delong import compare_aucs
from reportsup.analysis.summary import summarize_runs
from reportsup.contracts.run_dir import (
    METRICS_JSON,
    REPORT_HTML,
    predictions_csv,
    read_config,
    read_metrics,
    read_overrides,
    read_predictions,
)
from reportsup.contracts.run_dir import find_runs as find_run_dirs

TABLE_METRICS = ("auroc", "accuracy", "sensitivity", "specificity", "f1")  # Wood et al. Table 3 columns


@dataclass
class Run:
    """One finished run directory; ``overrides`` are its command-line overrides (``.hydra/overrides.yaml``)."""

    path: Path
    name: str
    seed: int | None
    metrics: dict[str, Any] = field(repr=False)
    overrides: frozenset[str] = frozenset()

    def predictions(self, test_set: str) -> pd.DataFrame | None:
        """``predictions_<test_set>.csv``, or ``None`` when the run has none for that set."""
        if not (self.path / predictions_csv(test_set)).is_file():
            return None
        return read_predictions(self.path, test_set)


def load_run(path: str | Path) -> Run:
    """A run directory with ``metrics.json``; name and seed from its Hydra config."""
    path = Path(path)
    metrics = read_metrics(path)
    cfg = read_config(path)
    seed = cfg.get("seed")
    return Run(
        path,
        str(cfg.get("name", path.name)),
        None if seed is None else int(seed),
        metrics,
        frozenset(read_overrides(path)),
    )


# Overrides that say where or how a run ran, or which repeat it is, not which method it is.
NOT_A_SETTING = (
    "seed=",
    "experiment=",
    "paths.",
    "hydra.",
    "logger",
    "trainer.devices=",
    "trainer.num_nodes=",
)


def setting_labels(runs: Sequence[tuple[str, set[str] | frozenset[str]]]) -> list[str]:
    """A group label per ``(experiment name, overrides)``: the name, plus the overrides that tell this
    run apart from the other runs *of the same experiment* (``alarm_binary [encoder=minilm]``), so that
    two settings of one experiment are compared as two groups while its repeats (split seeds) pool into
    one. Runs of different experiments are told apart by their names already."""
    by_name: dict[str, list[set[str]]] = {}
    for name, overrides in runs:
        by_name.setdefault(name, []).append(set(overrides))
    common = {name: set.intersection(*sets) for name, sets in by_name.items()}
    labels = []
    for name, overrides in runs:
        distinct = sorted(
            o for o in set(overrides) - common[name] if not o.lstrip("+~").startswith(NOT_A_SETTING)
        )
        labels.append(f"{name} [{', '.join(distinct)}]" if distinct else name)
    return labels


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by :func:`setting_labels`, in the order first seen."""
    groups: dict[str, list[Run]] = {}
    for run, label in zip(runs, setting_labels([(r.name, r.overrides) for r in runs]), strict=True):
        groups.setdefault(label, []).append(run)
    return groups


def find_runs(path: str | Path) -> list[Run]:
    """The run at ``path``, or every run below a multirun folder (sub-folders with ``metrics.json``)."""
    runs = find_run_dirs(path)
    if not runs:
        raise FileNotFoundError(
            f"{path}: neither a run ({METRICS_JSON}) nor a multirun folder with finished runs."
        )
    return [load_run(r) for r in runs]


def scored_predictions(pred: pd.DataFrame, label: str) -> pd.DataFrame:
    """``id, y, p`` of the reports with a known ``label`` in a predictions table (empty if absent)."""
    cols = {"id": "id", f"{label}_true": "y", f"{label}_prob": "p"}
    if not set(cols) <= set(pred.columns):
        return pd.DataFrame(columns=["id", "y", "p"])
    out = pred[list(cols)].rename(columns=cols).dropna(subset=["y"])
    return out.astype({"y": int})


def delong_between(a: pd.DataFrame, b: pd.DataFrame, label: str) -> dict[str, Any]:
    """DeLong test of ``label`` between two prediction tables (paired on shared ids, unpaired on disjoint)."""
    sa, sb = scored_predictions(a, label), scored_predictions(b, label)
    try:
        res = compare_aucs(sa["id"], sa["y"], sa["p"], sb["id"], sb["y"], sb["p"])
    except ValueError as err:
        return {"error": str(err)}
    return res.as_dict()


def compare_experiments(groups: Mapping[str, Sequence[Run]]) -> dict[str, Any]:
    """Per test set and label: every experiment's metrics over its repeats, and a DeLong test of each
    experiment against the first (the reference) within every repeat both have (matched by seed)."""
    names = list(groups)
    reference = names[0]
    out: dict[str, Any] = {"reference": reference, "experiments": {}, "delong": {}}
    for name in names:
        out["experiments"][name] = {
            "runs": [str(r.path) for r in groups[name]],
            # each run's one-page report (issue 22 item 5); None for a run finished before it existed
            "reports": [
                str(r.path / REPORT_HTML) if (r.path / REPORT_HTML).is_file() else None for r in groups[name]
            ],
            "metrics": summarize_runs([r.metrics for r in groups[name]]),
        }
    ref_by_seed = {r.seed: r for r in groups[reference]}
    for name in names[1:]:
        tests: list[dict[str, Any]] = []
        for run in groups[name]:
            ref = ref_by_seed.get(run.seed)
            if ref is None:
                tests.append(
                    {"seed": run.seed, "run": str(run.path), "error": f"no {reference} run with this seed"}
                )
                continue
            for test_set in sorted(set(run.metrics) & set(ref.metrics)):
                a, b = ref.predictions(test_set), run.predictions(test_set)
                for label in sorted(set(run.metrics[test_set]) & set(ref.metrics[test_set])):
                    if a is None or b is None:
                        res = {"error": f"{predictions_csv(test_set)} missing"}
                    else:
                        res = delong_between(a, b, label)
                    tests.append({"seed": run.seed, "test_set": test_set, "label": label, **res})
        out["delong"][name] = tests
    return out


def delong_digest(tests: Sequence[Mapping[str, Any]], test_set: str, label: str, alpha: float = 0.05) -> str:
    """``p = 0.012`` for one repeat, ``median p 0.03; 7/10 repeats p < 0.05`` for several."""
    ps = [
        t["p_value"]
        for t in tests
        if t.get("test_set") == test_set and t.get("label") == label and "p_value" in t
    ]
    if not ps:
        return "n/a"
    if len(ps) == 1:
        return f"p = {ps[0]:.3g}"
    return f"median p {np.median(ps):.3g}; {sum(p < alpha for p in ps)}/{len(ps)} repeats p < {alpha:g}"


def comparison_keys(comparison: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every ``(test set, label)`` that any compared experiment has metrics for, sorted."""
    exps = comparison["experiments"].values()
    return sorted({(s, lb) for e in exps for s, per in e["metrics"].items() for lb in per})


def comparison_markdown(comparison: Mapping[str, Any]) -> str:
    """Wood et al. Table 3 layout: one table per test set and label, a row per experiment with
    ``mean [95 % CI]`` of each metric over its repeats and the DeLong test against the reference."""
    ref = comparison["reference"]
    exps = comparison["experiments"]
    lines = [f"# Comparison (reference: {ref})", ""]
    for test_set, label in comparison_keys(comparison):
        lines += [
            f"## {test_set}: {label}",
            "",
            "| model | runs | " + " | ".join(TABLE_METRICS) + f" | DeLong vs {ref} |",
            "|---|---|" + "---|" * (len(TABLE_METRICS) + 1),
        ]
        for name, block in exps.items():
            per = block["metrics"].get(test_set, {}).get(label)
            if per is None:
                continue
            cells = []
            for m in TABLE_METRICS:
                f = per.get(m)
                if f is None:
                    cells.append("")
                elif f["n_runs"] > 1:
                    cells.append(f"{f['mean']:.3f} [{f['ci_low']:.3f}, {f['ci_high']:.3f}]")
                else:
                    cells.append(f"{f['mean']:.3f}")
            n_runs = max(f["n_runs"] for f in per.values())
            digest = (
                "reference" if name == ref else delong_digest(comparison["delong"][name], test_set, label)
            )
            lines.append(f"| {name} | {n_runs} | " + " | ".join(cells) + f" | {digest} |")
        lines.append("")
    for name, tests in comparison["delong"].items():
        lines += [
            f"## DeLong per repeat: {name} vs {ref}",
            "",
            f"| seed | test set | label | AUC {ref} | AUC {name} | difference (first - second) [95% CI] | z or D | p | test |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t in tests:
            if "p_value" in t:
                lines.append(
                    f"| {t['seed']} | {t['test_set']} | {t['label']} | {t['auc1']:.3f} | {t['auc2']:.3f} | "
                    f"{t['difference']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}] | {t['statistic']:.2f} | "
                    f"{t['p_value']:.3g} | {'paired' if t['paired'] else 'unpaired'} |"
                )
            else:
                lines.append(
                    f"| {t['seed']} | {t.get('test_set', '')} | {t.get('label', '')} | | | | | | {t['error']} |"
                )
        lines.append("")
    return "\n".join(lines)


def report_links_markdown(groups: Mapping[str, Sequence[Run]], out_dir: str | Path) -> str:
    """A section linking every compared run's ``report.html`` (issue 22 item 5), relative to the
    comparison folder so that the links hold in ``comparison.html`` and ``comparison.md`` alike; a run
    without the page (finished before it existed) says how to write it."""
    lines = ["## Run reports", ""]
    for name, runs in groups.items():
        lines += [f"### {name}", ""]
        for run in runs:
            page = run.path / REPORT_HTML
            seed = f" (seed {run.seed})" if run.seed is not None else ""
            if page.is_file():
                link = Path(os.path.relpath(page.resolve(), Path(out_dir).resolve())).as_posix()
                lines.append(f"- [{run.path.name}{seed}]({link})")
            else:
                lines.append(
                    f"- {run.path.name}{seed}: no {REPORT_HTML}; write it with "
                    f"`python -m reportsup.analysis.run_report {run.path}`"
                )
        lines.append("")
    return "\n".join(lines)


def delong_across_test_sets(run: Run, reference_set: str = "report_label") -> list[dict[str, Any]]:
    """DeLong test of every other test set against ``reference_set`` within one run, per label
    (Wood et al.: report-label vs image-label evaluation, and the external site)."""
    ref = run.predictions(reference_set)
    out = []
    if ref is None:
        return out
    for test_set, per_label in run.metrics.items():
        if test_set == reference_set or "@" in test_set:  # <set>@val_threshold / @youden: same scores
            continue
        other = run.predictions(test_set)
        for label in per_label:
            if label not in run.metrics.get(reference_set, {}):
                continue
            res = (
                {"error": f"{predictions_csv(test_set)} missing"}
                if other is None
                else delong_between(ref, other, label)
            )
            out.append(
                {
                    "seed": run.seed,
                    "run": str(run.path),
                    "sets": [reference_set, test_set],
                    "label": label,
                    **res,
                }
            )
    return out


def delong_across_test_sets_markdown(tests: Sequence[Mapping[str, Any]], title: str) -> str:
    """One row per repeat and label: AUC of both test sets, their difference, the DeLong statistic and p."""
    lines = [
        f"## {title}",
        "",
        "| seed | label | sets | AUC first | AUC second | difference [95% CI] | z or D | p | test |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tests:
        sets = " vs ".join(t["sets"])
        if "p_value" in t:
            lines.append(
                f"| {t['seed']} | {t['label']} | {sets} | {t['auc1']:.3f} | {t['auc2']:.3f} | "
                f"{t['difference']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}] | {t['statistic']:.2f} | "
                f"{t['p_value']:.3g} | {'paired' if t['paired'] else 'unpaired'} |"
            )
        else:
            lines.append(f"| {t['seed']} | {t['label']} | {sets} | | | | | | {t['error']} |")
    return "\n".join(lines) + "\n"
