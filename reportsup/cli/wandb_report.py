"""A W&B Report comparing experiment groups: ``reportsup-wandb-report`` (wandb's reports API, ``wandb-workspaces``).

    reportsup-wandb-report --entity my-lab --project reportsup \\
        --groups alarm_binary_10x alarm_baseline_word2vec_10x \\
        --metrics test/report_label/abnormal/auroc test/image_label/abnormal/auroc \\
        --roc roc/abnormal --comparison outputs/comparisons/<time>/comparison.md \\
        --ablation-table outputs/damil_ablations/table_s2.md

Every reportsup run logs to W&B with ``group`` = experiment name (``logger=wandb``), so a group holds
the repeats of one experiment. The report has, per metric, a bar chart of the groups (mean over the
repeats, error bars = standard error: W&B's bar charts offer stddev, stderr or min-max, not a t
interval), the groups' ROC images side by side, the runs table, and, as Markdown, the local
comparison (``reportsup-compare``: mean and 95 % t-CI, DeLong p-values) and the ablation table
(``reportsup-ablation-table``). With ``--comparisons report_label_abnormal ...`` it also shows the
comparison runs that ``reportsup-compare --wandb-project`` logs: bars with 95 % t-CIs over repeats,
the overlaid ROC curves of every repeat, and the metrics table. :func:`build_report` makes the report without a server; ``main`` saves it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path


def build_report(
    entity: str,
    project: str,
    groups: Sequence[str],
    metrics: Sequence[str],
    roc_keys: Sequence[str] = (),
    title: str | None = None,
    comparison_md: str | None = None,
    ablation_md: str | None = None,
    comparison_figures: Sequence[str] = (),
):
    """The :class:`wandb_workspaces.reports.v2.Report` (not saved). ``comparison_figures`` (e.g.
    ``report_label_abnormal``) adds the runs of ``reportsup-compare --wandb-project``: their bars with
    95 % CIs over repeats, overlaid ROC curves and metrics table."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    if not groups:
        raise ValueError("name at least one W&B group (an experiment name) to compare.")
    if not metrics:
        raise ValueError("name at least one metric, e.g. test/report_label/abnormal/auroc.")
    runsets = [
        wr.Runset(entity=entity, project=project, name=g, filters=[expr.Metric("Group") == g]) for g in groups
    ]
    bars = [
        wr.BarPlot(
            title=m,
            metrics=[wr.SummaryMetric(m)],
            groupby="Group",
            groupby_aggfunc="mean",
            groupby_rangefunc="stderr",
            orientation="v",
        )
        for m in metrics
    ]
    media = [wr.MediaBrowser(title=k, media_keys=[k], num_columns=len(groups)) for k in roc_keys]
    blocks = [
        wr.P(
            f"Groups: {', '.join(groups)}. Bars: mean over each group's runs (repeated splits), error bars: standard error."
        ),
        wr.H2("Metrics"),
        wr.PanelGrid(runsets=runsets, panels=[*bars, *media, wr.RunComparer(diff_only="split")]),
    ]
    if comparison_figures:
        from reportsup.cli.common import COMPARE_GROUP

        compare_runs = wr.Runset(
            entity=entity,
            project=project,
            name=COMPARE_GROUP,
            filters=[expr.Metric("Group") == COMPARE_GROUP],
        )
        panels = [
            wr.MediaBrowser(title=f"{kind}: {key}", media_keys=[f"comparison/{kind}/{key}"], num_columns=1)
            for key in comparison_figures
            for kind in ("bars", "roc")
        ]
        blocks += [
            wr.H2("Mean and 95% CI over repeats, overlaid ROC curves (reportsup-compare --wandb-project)"),
            wr.PanelGrid(
                runsets=[compare_runs],
                panels=[*panels, wr.WeavePanelSummaryTable(table_name="comparison/metrics")],
            ),
        ]
    if comparison_md:
        blocks += [
            wr.H2("Mean and 95% CI over repeats, DeLong tests (reportsup-compare)"),
            wr.MarkdownBlock(comparison_md),
        ]
    if ablation_md:
        blocks += [wr.H2("Ablations (reportsup-ablation-table)"), wr.MarkdownBlock(ablation_md)]
    return wr.Report(
        entity=entity,
        project=project,
        title=(title or f"reportsup: {' vs '.join(groups)}")[:128],
        description="Built by reportsup-wandb-report",
        blocks=blocks,
        width="fluid",
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--entity", default=os.environ.get("WANDB_ENTITY"), help="W&B entity (or WANDB_ENTITY)"
    )
    parser.add_argument("--project", default="reportsup")
    parser.add_argument("--groups", nargs="+", required=True, help="experiment names (W&B groups)")
    parser.add_argument(
        "--metrics", nargs="+", required=True, help="summary metrics, e.g. test/report_label/abnormal/auroc"
    )
    parser.add_argument("--roc", nargs="*", default=(), help="image keys of ROC curves, e.g. roc/abnormal")
    parser.add_argument("--comparison", default=None, help="a reportsup-compare comparison.md to include")
    parser.add_argument(
        "--ablation-table", default=None, help="a reportsup-ablation-table Markdown file to include"
    )
    parser.add_argument(
        "--comparisons",
        nargs="*",
        default=(),
        help="<test set>_<label> keys (e.g. report_label_abnormal) of reportsup-compare runs' CI bars and ROC overlays",
    )
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    if not args.entity:
        raise SystemExit(
            "reportsup-wandb-report: set --entity (or WANDB_ENTITY): the team or user that owns the project."
        )
    texts = {}
    for key, path in (("comparison_md", args.comparison), ("ablation_md", args.ablation_table)):
        if path:
            if not Path(path).is_file():
                raise SystemExit(f"reportsup-wandb-report: {path} not found.")
            texts[key] = Path(path).read_text()
    try:
        report = build_report(
            args.entity,
            args.project,
            args.groups,
            args.metrics,
            args.roc,
            args.title,
            comparison_figures=args.comparisons,
            **texts,
        )
    except ValueError as err:
        raise SystemExit(f"reportsup-wandb-report: {err}") from None
    try:
        report.save()
    except Exception as err:  # no network, no credentials, no such project: say so, in one line
        raise SystemExit(
            f"reportsup-wandb-report: could not save the report to {args.entity}/{args.project}: {err}. "
            "Log in (`wandb login`), sync offline runs first (`wandb sync <run>/wandb/offline-run-*`)."
        ) from None
    print(f"W&B report: {report.url}")


if __name__ == "__main__":
    main()
