"""``reportsup-ablation-table``: the DaMIL ablation study in the layout of Liu et al. 2023, Table S2:
one row per model (A, B, C, D, DaMIL), one column per abnormality type, AUROC (%) micro-averaged over
the 17 regions with its 95 % CI.

    reportsup-ablation-table outputs/multirun/...            # table from finished runs
    reportsup-ablation-table --run --out-dir ablations demo=true   # train the 5 models, then the table

Runs are found by their ``metrics.json`` (at any depth below the folders given) and named by
``config_resolved.yaml``'s experiment name.
Several runs of one model (repeats) are averaged, with the number of runs in the table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from reportsup.contracts.labels.crossdl import TYPES
from reportsup.contracts.run_dir import (
    CONFIG_RESOLVED,
    METRICS_JSON,
    find_runs,
    read_metrics,
    read_resolved_config,
)
from reportsup.runner.setup import PROJECT_ROOT

ROWS = {
    "damil_ablation_cls": "A",
    "damil_ablation_cls_attention": "B",
    "damil_ablation_static_mil": "C",
    "damil_ablation_coarse_inference": "D",
    "damil_multiscale": "DaMIL",
}
SHORT = {
    "intraparenchymal_hyperdensity": "Intra-hyper",
    "extraparenchymal_hyperdensity": "Extra-hyper",
    "intraparenchymal_hypodensity": "Intra-hypo",
    "extraparenchymal_hypodensity": "Extra-hypo",
}


def collect_runs(dirs: Sequence[Path]) -> pd.DataFrame:
    """One row per run: model, type, AUROC, CI (from each run's metrics.json)."""
    rows = []
    for root in dirs:
        for run in find_runs(root, recursive=True):
            if not (run / CONFIG_RESOLVED).is_file():
                continue
            name = read_resolved_config(run).get("name", "")
            metrics = read_metrics(run).get("test", {})
            for t in TYPES:
                auc = metrics.get(f"type:{t}", {}).get("auroc")
                if auc:
                    rows.append(
                        {
                            "experiment": name,
                            "model": ROWS.get(name, name),
                            "type": t,
                            "auroc": auc["value"],
                            "ci_low": auc["ci_low"],
                            "ci_high": auc["ci_high"],
                            "run": str(run),
                        }
                    )
    return pd.DataFrame(rows, columns=["experiment", "model", "type", "auroc", "ci_low", "ci_high", "run"])


def table_s2(runs: pd.DataFrame) -> pd.DataFrame:
    """Models x types, ``AUROC (CI)`` in percent; the paper's row order first, other experiments after."""
    order = [m for m in ROWS.values() if m in set(runs["model"])] + sorted(
        set(runs["model"]) - set(ROWS.values())
    )
    out = pd.DataFrame(index=order, columns=[SHORT.get(t, t) for t in TYPES] + ["runs"])
    for model, group in runs.groupby("model"):
        for t in TYPES:
            g = group[group["type"] == t]
            if len(g):
                out.loc[model, SHORT.get(t, t)] = (
                    f"{100 * g['auroc'].mean():.1f} ({100 * g['ci_low'].mean():.1f}-{100 * g['ci_high'].mean():.1f})"
                )
        out.loc[model, "runs"] = group["run"].nunique()
    return out.fillna("-")


def to_markdown(table: pd.DataFrame) -> str:
    header = "| AUROC (%) | " + " | ".join(table.columns) + " |"
    lines = [header, "|" + "---|" * (len(table.columns) + 1)]
    lines += [f"| {idx} | " + " | ".join(str(v) for v in row) + " |" for idx, row in table.iterrows()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "items", nargs="*", help="run or multirun directories; with --run also key=value overrides"
    )
    parser.add_argument("--run", action="store_true", help="train the five models first (train.py -m)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/ablation_table"))
    args = parser.parse_args(argv)
    overrides = [i for i in args.items if "=" in i]
    dirs = [Path(i) for i in args.items if "=" not in i]
    if args.run:
        dirs = [p for p in dirs if p.exists()]
        sweep = args.out_dir / "runs"
        if sweep.exists() and any(sweep.iterdir()):
            sys.exit(
                f"error: {sweep} is not empty; choose a new --out-dir (nothing you made is overwritten)."
            )
        command = [
            sys.executable,
            str(PROJECT_ROOT / "train.py"),
            "-m",
            f"experiment={','.join(ROWS)}",
            f"hydra.sweep.dir={sweep}",
            *overrides,
        ]
        print("running:", " ".join(command), flush=True)
        subprocess.run(command, check=True)
        dirs.append(sweep)
    if not dirs:
        parser.error("give run directories, or --run")
    try:
        runs = collect_runs(dirs)
    except FileNotFoundError as err:  # a folder given that does not exist
        sys.exit(f"error: {err}")
    if runs.empty:
        sys.exit(
            f"error: no finished DaMIL runs ({METRICS_JSON} + {CONFIG_RESOLVED}) under {[str(d) for d in dirs]}."
        )
    table = table_s2(runs)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    runs.to_csv(args.out_dir / "ablation_runs.csv", index=False)
    table.to_csv(args.out_dir / "table_s2.csv")
    md = to_markdown(table)
    (args.out_dir / "table_s2.md").write_text(
        "Table S2 layout (Liu et al. 2023): AUROC (%) per type, micro-averaged over the 17 regions, 95% CI.\n\n"
        + md
        + "\n"
    )
    print(md)
    print(f"written: {args.out_dir / 'table_s2.md'}, {args.out_dir / 'table_s2.csv'}")


if __name__ == "__main__":
    main()
