"""DaMIL learning curve (issue 20): the analyzer and a plain 3D classifier (ablation A,
``damil_ablation_cls``) trained on growing numbers of synthetic head-CT phantoms, scored on one fixed
held-out test set.

Liu et al. 2023, Figure S2C/D, trained the analyzer on 2,000 to 28,472 scans; this asks the same
question of our pipeline on phantoms: does DaMIL find lesions that a human sees at once, and how does
that change with the number of training scans? If the plain classifier cannot find a 70 HU blob
either, the data path is the suspect, not the MIL method.

Every run is ``train.py experiment=<model> demo=true`` on one phantom set of ``max(sizes) + 2 x
--eval-scans`` scans (one generation, one cache), split by patient into train / validation / test with
the validation and test shares fixed at ``--eval-scans`` each; ``data.max_train_scans`` takes the first
N of one seeded permutation of the training split (a smaller set is a subset of a larger one). The
epoch budget per scan is the same for every size (``--epochs``). Per run: scan-level AUROC per type,
micro cell AUROC, localisation Dice at the validation-chosen threshold, each with its bootstrap CI,
and the run's wall time, device and peak memory (``resources_used.json``). Finished runs are reused
(delete a run's folder to redo it). Writes ``learning_curve.csv``, ``learning_curve.md`` and
``learning_curve.png`` (metric vs training phantoms) into ``--out``.

    .venv/bin/python benchmarks/damil_learning_curve.py --sizes 160 320 640 --seeds 0 1
    .venv/bin/python benchmarks/damil_learning_curve.py --size 160 160 80 --sizes 640 2000  # the paper's
        input size, for a GPU: the table then also reports GPU time and peak GPU memory

Not a test: a 160-phantom run takes ~25 min in fp32 on 2 AMD EPYC cores (~7 min with AMX bf16).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from _device import cpu_line, header, pick_device

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"damil": "damil_multiscale", "cls": "damil_ablation_cls"}
#: metrics.json keys of the test set -> table columns
HYPER = ("intraparenchymal_hyperdensity", "extraparenchymal_hyperdensity")


def run_one(model: str, n_train: int, seed: int, args: argparse.Namespace) -> Path:
    """One training run (reused when its metrics.json exists); returns its run folder."""
    out = args.out / "runs" / f"{model}_n{n_train}_seed{seed}"
    done = list(out.glob(f"{MODELS[model]}/*/metrics.json"))
    if done:
        return done[0].parent
    total = max(args.sizes) + 2 * args.eval_scans
    frac_eval = args.eval_scans / total
    overrides = [
        f"experiment={MODELS[model]}",
        "demo=true",
        f"seed={seed}",
        f"paths.output_dir={out}",
        f"paths.data_dir={args.out / 'data'}",
        f"data.demo.n_scans={total}",
        "data.demo.seed=0",  # one phantom set for every run: only the training subset and seed vary
        f"data.split.fractions=[{1 - 2 * frac_eval:.6f},{frac_eval:.6f},{frac_eval:.6f}]",
        "data.split.seed=0",  # one test set for every run
        f"data.max_train_scans={n_train}",
        f"data.spatial_size=[{','.join(map(str, args.size))}]",
        f"trainer.max_epochs={args.epochs}",
        *args.override,
    ]
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    with open(out / "stdout.log", "w") as log:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *overrides],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise SystemExit(
            f"{model} n={n_train} seed={seed} failed after {time.perf_counter() - tic:.0f} s: see {out}/stdout.log"
        )
    return next(out.glob(f"{MODELS[model]}/*/metrics.json")).parent


def row(model: str, n_train: int, seed: int, run: Path) -> dict:
    test = json.loads((run / "metrics.json").read_text())["test"]
    used = json.loads((run / "resources_used.json").read_text())
    summary = json.loads((run / "data_summary.json").read_text())
    out = {"model": model, "n_train": n_train, "seed": seed, "run": str(run)}
    out["n_train_used"] = summary.get("sizes", {}).get("train")
    out["n_test"] = summary.get("sizes", {}).get("test")

    def put(name: str, metric: dict | None) -> None:
        metric = metric or {}
        out[name] = metric.get("value")
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = metric.get("ci_low"), metric.get("ci_high")

    put("micro_auroc", test.get("micro", {}).get("auroc"))
    for key, value in test.items():
        if key.startswith("scan:"):
            put(f"scan_auroc:{key[5:]}", value.get("auroc"))
        elif key.startswith("dice:"):
            put(f"dice:{key[5:]}", value.get("dice"))
    out["fit_min"] = used["wall_seconds"].get("fit", float("nan")) / 60
    out["device"] = used["device"]
    out["peak_rss_gib"], out["gpu_peak_gib"] = used["peak_rss_gib"], used["gpu_peak_allocated_gib"]
    return out


def fmt(r: pd.Series, name: str) -> str:
    if name not in r or pd.isna(r[name]):
        return "-"
    return f"{r[name]:.2f} ({r[f'{name}_ci_low']:.2f}-{r[f'{name}_ci_high']:.2f})"


def write_outputs(table: pd.DataFrame, args: argparse.Namespace) -> None:
    table.to_csv(args.out / "learning_curve.csv", index=False)
    cols = ["micro_auroc", *[f"scan_auroc:{t}" for t in HYPER], *[f"dice:{t}" for t in HYPER]]
    lines = [
        f"{cpu_line()}; input {'x'.join(map(str, args.size))}; {args.epochs} epochs; "
        f"test set {int(table['n_test'].iloc[0])} phantoms",
        "",
        "| model | train phantoms | seed | " + " | ".join(cols) + " | fit min | device | peak GPU GiB |",
        "|---" * (len(cols) + 6) + "|",
    ]
    for _, r in table.sort_values(["model", "n_train", "seed"]).iterrows():
        cells = " | ".join(fmt(r, c) for c in cols)
        gpu = "-" if pd.isna(r["gpu_peak_gib"]) else f"{r['gpu_peak_gib']:.2f}"
        lines.append(
            f"| {r['model']} | {r['n_train_used']} | {r['seed']} | {cells} | {r['fit_min']:.1f} | {r['device']} | {gpu} |"
        )
    (args.out / "learning_curve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.5), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        for model, part in table.groupby("model"):
            mean = part.groupby("n_train_used")[col].mean()
            ax.plot(mean.index, mean.values, "o-", label=model)
            ax.scatter(part["n_train_used"], part[col], s=10, alpha=0.5)
        ax.set_xscale("log")
        ax.set_title(col.replace("_", " "), fontsize=9)
        ax.set_xlabel("training phantoms")
        ax.set_ylim(0, 1)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(args.out / "learning_curve.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 320, 640], help="training phantoms")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["damil", "cls"])
    parser.add_argument("--eval-scans", type=int, default=100, help="validation and test phantoms, each")
    parser.add_argument(
        "--size", type=int, nargs=3, default=[64, 64, 32], help="input size (paper: 160 160 80)"
    )
    parser.add_argument("--epochs", type=int, default=20, help="epochs for every size (the demo's)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "damil_learning_curve")
    parser.add_argument("override", nargs="*", help="extra train.py overrides for every run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from reportsup.runner.setup import auto_precision

    device = pick_device("auto")
    print(
        header(device, f"{auto_precision()} (trainer.precision ${{auto_precision:}} of every run)"),
        flush=True,
    )
    print("each run's device and peak GPU memory: resources_used.json, in the table", flush=True)
    rows = []
    for n in sorted(args.sizes):
        for seed in args.seeds:
            for model in args.models:
                tic = time.perf_counter()
                run = run_one(model, n, seed, args)
                rows.append(row(model, n, seed, run))
                print(f"{model} n={n} seed={seed}: {time.perf_counter() - tic:.0f} s, {run}", flush=True)
                write_outputs(pd.DataFrame(rows), args)


if __name__ == "__main__":
    main()
