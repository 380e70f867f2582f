"""Summarise a multirun: every metric as mean and 95 % CI over its runs (``summary.json``, ``summary.md``).

Runs automatically when a Hydra multirun ends (``hydra.callbacks.multirun_summary``: :class:`MultirunSummary`),
and by hand (``reportsup/cli/summarize.py``):

    reportsup-summarize outputs/alarm_binary_10x/2026-11-23_12-00-00

Runs are grouped by experiment name (``name`` in each run's ``.hydra/config.yaml``) and by the swept
values that tell them apart other than the seed (``category=mass``, ``data.max_train_sentences=500``),
so 10 seeds of one setting are summarised together and different settings side by side. A run without
``metrics.json`` (failed, or still running) is listed under ``missing`` and left out of the means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from reportsup.analysis.run_comparison import (
    delong_across_test_sets,
    delong_across_test_sets_markdown,
    load_run,
    setting_labels,
)
from reportsup.analysis.summary import summarize_runs, summary_markdown
from reportsup.contracts.run_dir import (
    CONFIG_DIR,
    HYDRA_CONFIG,
    METRICS_JSON,
    SUMMARY_JSON,
    SUMMARY_MD,
    find_runs,
    is_finished_run,
    read_config,
    read_overrides,
    write_json,
    write_text,
)


def summarize_multirun(multirun_dir: str | Path) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``summary.md`` into ``multirun_dir`` and return their paths."""
    multirun_dir = Path(multirun_dir)
    runs = find_runs(multirun_dir, finished=False)  # the failed ones too: listed under `missing`
    if not runs:
        raise FileNotFoundError(
            f"{multirun_dir}: no runs found (expected <run>/{CONFIG_DIR}/{HYDRA_CONFIG} below it)."
        )
    grouped: dict[str, list[dict[str, Any]]] = {}
    dirs: dict[str, list[str]] = {}
    missing = []
    delong: dict[str, list[dict[str, Any]]] = {}
    # Repeats differ only in their seed; other swept values (training size, category) are groups.
    labels = setting_labels(
        [(str(read_config(run).get("name", "default")), set(read_overrides(run))) for run in runs]
    )
    for run, name in zip(runs, labels, strict=True):
        if not is_finished_run(run):
            missing.append(str(run))
            continue
        finished = load_run(run)
        grouped.setdefault(name, []).append(finished.metrics)
        dirs.setdefault(name, []).append(str(run))
        # Wood et al.: report-label vs image-label (and external-site) AUC, DeLong within each repeat.
        delong.setdefault(name, []).extend(delong_across_test_sets(finished))
    summary = {
        "multirun_dir": str(multirun_dir),
        "missing": missing,
        "experiments": {
            name: {"runs": dirs[name], "metrics": summarize_runs(ms), "delong_test_sets": delong[name]}
            for name, ms in grouped.items()
        },
    }
    json_path = write_json(multirun_dir / SUMMARY_JSON, summary)
    md = []
    for name, block in summary["experiments"].items():
        md.append(
            summary_markdown(
                block["metrics"], title=f"{name}: mean and 95% CI over {len(block['runs'])} run(s)"
            )
        )
        if block["delong_test_sets"]:
            md.append(
                delong_across_test_sets_markdown(
                    block["delong_test_sets"], title=f"{name}: test sets compared (DeLong)"
                )
            )
    if missing:
        md.append(f"Runs without {METRICS_JSON} (failed or unfinished): " + ", ".join(missing))
    md_path = write_text(multirun_dir / SUMMARY_MD, "\n\n".join(md) + "\n")
    return json_path, md_path


class MultirunSummary(Callback):
    """Hydra callback: summarise the sweep directory once every job of the multirun has returned."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("sweep") is not None:
            # sweep workers: their trials live in the study's folder (trials.csv, best_params.yaml)
            print("[reportsup] sweep workers finished: see reportsup-sweep-status for the study")
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            json_path, md_path = summarize_multirun(sweep_dir)
        except FileNotFoundError as err:
            print(f"[reportsup] no summary: {err}")
            return
        print(md_path.read_text())
        print(f"[reportsup] summary: {json_path} and {md_path}")
