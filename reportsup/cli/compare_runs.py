"""Compare experiments run by run: ``reportsup-compare RUN_OR_MULTIRUN_DIR...`` (Wood et al. Table 3).

    reportsup-compare outputs/alarm_binary_10x/<time> outputs/alarm_baseline_word2vec_10x/<time>

Runs are grouped by experiment name and by the command-line overrides that tell them apart (seed,
paths and launcher settings aside: ``alarm_binary [encoder=minilm]`` vs ``alarm_binary [encoder=tiny]``),
so repeats pool and settings compare; the first group named is the reference. Every metric is
shown as mean and 95 % CI over the repeats, and each other experiment is tested against the reference
with DeLong's test on the same test reports within every repeat (runs matched by split seed).
Writes ``comparison.md``, ``comparison.html`` (the same page with the figures), ``comparison.json`` and
overlaid ROC curves per test set and label (``plots/roc_<set>_<label>.png``, every repeat a thin line)
into a new folder (``--out``); nothing is overwritten. ``--wandb-project P`` also logs the comparison
as a W&B run (group ``reportsup-compare``) that ``reportsup-wandb-report --comparisons`` shows.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

from reportsup.analysis.plots import plot_metric_bars, plot_roc_repeats
from reportsup.analysis.run_comparison import (
    TABLE_METRICS,
    Run,
    compare_experiments,
    comparison_keys,
    comparison_markdown,
    find_runs,
    group_runs,
    report_links_markdown,
    scored_predictions,
)
from reportsup.cli.common import COMPARE_GROUP
from reportsup.contracts.run_dir import (
    COMPARISON_HTML,
    COMPARISON_JSON,
    COMPARISON_MD,
    plots_dir,
    write_json,
    write_text,
)


def compare_dirs(
    dirs: Sequence[str | Path],
    out_dir: str | Path,
    wandb_project: str | None = None,
    wandb_entity: str | None = None,
) -> tuple[Path, Path]:
    groups = group_runs([run for d in dirs for run in find_runs(d)])
    if len(groups) < 2:
        raise ValueError(
            f"only one experiment setting ({', '.join(groups)}) among the runs given: name runs of at least "
            "two experiments or settings (e.g. an alarm_binary_10x and an alarm_baseline_word2vec_10x "
            "multirun folder, or alarm_binary runs with encoder=biobert and encoder=minilm)."
        )
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"{out} exists and is not empty: choose another --out (nothing is overwritten)."
        )
    out.mkdir(parents=True, exist_ok=True)
    comparison = compare_experiments(groups)
    json_path = write_json(out / COMPARISON_JSON, comparison)
    md = (
        comparison_markdown(comparison)
        + "\n"
        + metric_bar_figures(comparison, out)
        + roc_figures(groups, out)
        + "\n"
        + report_links_markdown(groups, out)  # each run's report.html (issue 22 item 5)
    )
    md_path = write_text(out / COMPARISON_MD, md)
    write_html(md, out / COMPARISON_HTML)
    if wandb_project:
        log_to_wandb(comparison, out, wandb_project, wandb_entity)
    return json_path, md_path


def metric_bar_figures(comparison: dict, out: Path) -> str:
    """One bar chart per test set and label (mean and 95 % CI over repeats of every Table 3 metric);
    returns the Markdown that shows them."""
    exps = comparison["experiments"]
    lines = ["## Metrics: mean and 95 % CI over repeats", ""]
    for test_set, label in comparison_keys(comparison):
        groups = {
            name: {m: f for m, f in per.items() if m in TABLE_METRICS}
            for name, block in exps.items()
            if (per := block["metrics"].get(test_set, {}).get(label))
        }
        png = plot_metric_bars(
            groups, plots_dir(out) / f"bars_{test_set}_{label}.png", f"{test_set}: {label}"
        )
        lines += [f"![metrics {test_set} {label}]({png.relative_to(out)})", ""]
    return "\n".join(lines)


def roc_figures(groups: dict[str, list[Run]], out: Path) -> str:
    """One overlaid ROC figure per test set and label; returns the Markdown that shows them."""
    keys = sorted(
        {(s, lb) for runs in groups.values() for r in runs for s, per in r.metrics.items() for lb in per}
    )
    lines = ["## ROC curves", ""]
    for test_set, label in keys:
        curves = {}
        for name, runs in groups.items():
            repeats = []
            for run in runs:
                pred = run.predictions(test_set)
                scored = scored_predictions(pred, label) if pred is not None else None
                if scored is not None and 0 < scored["y"].sum() < len(scored):
                    repeats.append((scored["y"].to_numpy(), scored["p"].to_numpy()))
            if repeats:
                curves[name] = repeats
        if curves:
            png = plot_roc_repeats(
                curves, plots_dir(out) / f"roc_{test_set}_{label}.png", f"{test_set}: {label}"
            )
            lines.append(f"![ROC {test_set} {label}]({png.relative_to(out)})")
            lines.append("")
    return "\n".join(lines)


def comparison_rows(comparison: dict) -> list[dict]:
    """One row per experiment, test set, label and metric: mean and 95 % CI over repeats, repeats."""
    return [
        {
            "experiment": name,
            "test_set": test_set,
            "label": label,
            "metric": metric,
            "mean": f["mean"],
            "ci_low": f["ci_low"],
            "ci_high": f["ci_high"],
            "repeats": f["n_runs"],
        }
        for name, block in comparison["experiments"].items()
        for test_set, per_label in block["metrics"].items()
        for label, per_metric in per_label.items()
        for metric, f in per_metric.items()
    ]


def log_to_wandb(comparison: dict, out: Path, project: str, entity: str | None = None) -> Path:
    """The comparison as a W&B run (group ``reportsup-compare``, job_type ``compare``): the metrics table
    with 95 % CIs over repeats, the DeLong tests, and the figures (CI bars, overlaid ROC curves) under
    ``comparison/bars/...`` and ``comparison/roc/...``, which W&B bar charts cannot draw from single runs
    (their error bars are stddev/stderr/min-max, not a t-interval). Offline without credentials."""
    import pandas as pd
    import wandb

    from lightning_modules.common.loggers import wandb_offline

    offline = wandb_offline()
    service_before = os.environ.get("WANDB_SERVICE")
    run = wandb.init(
        project=project,
        entity=entity,
        dir=str(out),
        group=COMPARE_GROUP,
        job_type="compare",
        name=out.name,
        tags=[f"ref_{comparison['reference']}"[:64]],
        config={"reference": comparison["reference"], "experiments": list(comparison["experiments"])},
        mode="offline" if offline else "online",
    )
    try:
        run.log(
            {
                "comparison/metrics": wandb.Table(dataframe=pd.DataFrame(comparison_rows(comparison))),
                "comparison/delong": wandb.Table(
                    dataframe=pd.DataFrame(
                        [{"experiment": n, **t} for n, tests in comparison["delong"].items() for t in tests]
                    ).astype(str)
                ),
                **{
                    f"comparison/{kind}/{png.stem.removeprefix(kind + '_')}": wandb.Image(str(png))
                    for kind in ("bars", "roc")
                    for png in sorted(plots_dir(out).glob(f"{kind}_*.png"))
                },
            }
        )
    finally:
        run.finish()
        # wandb.init leaves this process's service address in os.environ (WANDB_SERVICE): a train.py
        # started from here later would send its run to that service and log nothing of its own.
        wandb.teardown()
        if service_before is None:
            os.environ.pop("WANDB_SERVICE", None)
    if offline:
        print(f"W&B: logged offline; upload with `wandb sync {out / 'wandb'}/offline-run-*`")
    return Path(run.dir)


def write_html(md: str, path: Path) -> None:
    import markdown

    body = markdown.markdown(md, extensions=["tables"])
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:32em}"
    path.write_text(
        f"<!doctype html><html><head><meta charset=utf-8><title>Comparison</title><style>{style}</style></head><body>{body}</body></html>\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="run or multirun directories")
    parser.add_argument(
        "--out", default=None, help="output folder (default: outputs/comparisons/<date>_<time>)"
    )
    parser.add_argument(
        "--wandb-project",
        default=None,
        help="also log the comparison (table with CIs, figures) as a W&B run (offline without credentials)",
    )
    parser.add_argument("--wandb-entity", default=os.environ.get("WANDB_ENTITY"))
    args = parser.parse_args(argv)
    out = args.out or f"outputs/comparisons/{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    try:
        json_path, md_path = compare_dirs(args.dirs, out, args.wandb_project, args.wandb_entity)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        raise SystemExit(f"reportsup-compare: {err}") from None
    print(md_path.read_text())
    print(f"wrote {md_path} and {json_path}")


if __name__ == "__main__":
    main()
