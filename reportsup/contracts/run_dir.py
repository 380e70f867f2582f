"""The run-directory contract (DESIGN.md, "Run directory contract"): every file name a run writes, in one
place, and the small writers and readers of those files; writers and readers import them from here
instead of typing names out or re-implementing the reading.

A run writes under ``outputs/<experiment>/<date>_<time>[_<slurm job>_<task>]/``::

    .hydra/config.yaml, overrides.yaml    Hydra's record of the composed config and the overrides
    config_resolved.yaml                  the config with every interpolation resolved
    label_manifest.json                   labels and encoder of the model (report models)
    tokenizer/                            a tokenizer trained for this run (the offline demo encoder)
    train.log                             the log (Hydra's job log; the job is named after train.py)
    provenance.json                       git commit and dirty tree, package versions, devices, command line
    splits.csv, data_summary.json         the patient-level split (id, patient_id, split) and its counts
    checkpoints/best-epoch<NN>.ckpt, last.ckpt
    metrics.json                          {test_set: {label: {metric: {value, ci_low, ci_high}}}}
    predictions_<test_set>.csv            id, patient_id, <label>_true, <label>_prob
    youden_cutoffs.json                   spine image models: cut-offs chosen on the cut-off test set
    val_thresholds.json                   model.threshold=validation: per-label thresholds chosen on validation
    plots/                                ROC, PR, reliability (calibration_*), confusion matrices, plots/occlusion/
    maps/, overlays/, holdouts/<set>/     DaMIL abnormality maps and their PNG overlays
    attention_*.html, embeddings_*.png    written later into the run by reportsup-attention/-embeddings

A multirun folder holds one run folder per job plus ``summary.json`` and ``summary.md``; an Optuna sweep
folder holds ``study.db`` (or ``journal.log``), ``trials.csv``, ``best_params.yaml``, ``plots/`` and
``trial_<NNNN>/`` runs; ``reportsup-compare`` writes ``comparison.{json,md,html}`` and ``plots/``.

This module is the bottom layer: it imports nothing else of ours (stdlib, pandas and PyYAML only).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

# --- a run folder -------------------------------------------------------------------------------------
CONFIG_DIR = ".hydra"  # Hydra's output_subdir; a resumed run adds .hydra_resumed_<time>/
CONFIG_DIR_RESUMED_PREFIX = ".hydra_resumed_"
HYDRA_CONFIG = "config.yaml"  # inside CONFIG_DIR, written by Hydra
HYDRA_OVERRIDES = "overrides.yaml"  # inside CONFIG_DIR, written by Hydra
CONFIG_RESOLVED = "config_resolved.yaml"
LABEL_MANIFEST = "label_manifest.json"
PROVENANCE_JSON = "provenance.json"
RESOURCES_USED = "resources_used.json"  # wall times, peak host and accelerator memory of the run
SPLITS_CSV = "splits.csv"
DATA_SUMMARY = "data_summary.json"
CHECKPOINTS = "checkpoints"
BEST_CHECKPOINT_PREFIX = "best-"  # ModelCheckpoint filename best-epoch{epoch:02d} (configs/callbacks/*.yaml)
LAST_CHECKPOINT = "last.ckpt"  # Lightning's save_last name
HPC_CHECKPOINT_GLOB = "hpc_ckpt_*.ckpt"  # Lightning's SLURM auto-requeue checkpoint, in the run folder
METRICS_JSON = "metrics.json"
PREDICTIONS_PREFIX = "predictions_"
YOUDEN_CUTOFFS = "youden_cutoffs.json"
VAL_THRESHOLDS = "val_thresholds.json"  # model.threshold=validation (issue 22 item 3)
REPORT_HTML = "report.html"  # one page per run (issue 22 item 5, reportsup.analysis.run_report)
REPORT_ATTENTION_JSON = "report_attention.json"  # {set: {label: [{id, text, words: [[start, end, w]]}]}}
VAL_THRESHOLD_SUFFIX = "@val_threshold"  # metrics.json: <test set>@val_threshold, the metrics at them
PLOTS = "plots"
ROC_PLOT_PREFIX = "roc_"  # plots/roc_<label>.png
PR_PLOT_PREFIX = "pr_"  # plots/pr_<label>.png, precision-recall curves (issue 22 item 2)
CALIBRATION_PLOT_PREFIX = "calibration_"  # plots/calibration_<label>.png, reliability diagrams
OCCLUSION = "occlusion"  # inside PLOTS
MAPS = "maps"  # DaMIL NIfTI maps
OVERLAYS = "overlays"  # DaMIL PNG overlays
HOLDOUTS = "holdouts"  # DaMIL: a hold-out test set's maps go under holdouts/<set>/
TOKENIZER_DIR = "tokenizer"  # the demo encoder's tokenizer, trained once per run (configs/encoder/tiny.yaml)
STAGE_LOG = "stdout.log"  # a run started as a subprocess (the spine two-step demo) logs here
# Written by the DataModules (their split code is owned with the split contract, reportsup.contracts.splits).
REPORTS_WITHOUT_FINDINGS = "reports_without_findings.csv"
SCANS_WITHOUT_LABELS = "scans_without_labels.csv"
INTENSITY_STATS = "intensity_stats.json"

# --- a multirun folder ------------------------------------------------------------------------------
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"

# --- an Optuna sweep folder (reportsup.runner.sweep) -------------------------------------------------
SWEEP_DB = "study.db"
SWEEP_JOURNAL = "journal.log"
SWEEP_TRIALS_CSV = "trials.csv"
SWEEP_BEST_PARAMS = "best_params.yaml"

# --- a comparison folder (reportsup-compare) ---------------------------------------------------
COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
COMPARISON_HTML = "comparison.html"


def predictions_csv(test_set: str) -> str:
    """``predictions_<test_set>.csv``: ``id``, ``patient_id``, ``<label>_true``, ``<label>_prob``."""
    return f"{PREDICTIONS_PREFIX}{test_set}.csv"


def parameter_digest_json(rank: int) -> str:
    """``parameter_digest_rank<r>.json``: the DDP replica check of one rank."""
    return f"parameter_digest_rank{rank}.json"


def attention_page_html(test_set: str, label: str, kind: str) -> str:
    """``attention_<set>_<label>_<kind>.html``: ``reportsup-attention``'s page, written into the run."""
    return f"attention_{test_set}_{label}_{kind}.html"


def embedding_map_png(test_set: str, label: str) -> str:
    """``embeddings_<set>_<label>.png`` (and ``.csv``): ``reportsup-embeddings``' map, written into the run."""
    return f"embeddings_{test_set}_{label}.png"


def sweep_trial_dir(number: int) -> str:
    """``trial_<NNNN>``: the run folder of one Optuna trial inside its sweep folder."""
    return f"trial_{number:04d}"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def plots_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / PLOTS


def run_dir_of_checkpoint(ckpt_path: str | Path) -> Path:
    """The run folder a checkpoint belongs to: ``<run>/checkpoints/x.ckpt`` -> ``<run>``; a checkpoint
    elsewhere -> its own folder."""
    ckpt = Path(ckpt_path).resolve()
    return ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else ckpt.parent


# --- writers -----------------------------------------------------------------------------------------


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically: a temporary file in the same folder, then renamed over ``path``, so a
    reader (a multirun summary, a requeued job) never sees half a file from a run killed mid-write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON (with a final newline), written atomically (:func:`write_text`)."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


# --- readers -----------------------------------------------------------------------------------------


def read_json(path: str | Path) -> Any:
    """A JSON file; a corrupt one is a ``ValueError`` naming the file and the position."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "the run may have been killed while writing it: rerun its test step."
        ) from None


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """``metrics.json`` of a finished run: ``{test_set: {label: {metric: {value, ci_low, ci_high}}}}``."""
    path = Path(run_dir) / METRICS_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"{Path(run_dir)}: no {METRICS_JSON} (the run failed, is still running, or is not a run)."
        )
    metrics = read_json(path)
    if not isinstance(metrics, dict):
        raise ValueError(
            f"{path}: expected {{test_set: {{label: {{metric: ...}}}}}}, found {type(metrics).__name__}."
        )
    return metrics


def prediction_sets(run_dir: str | Path) -> list[str]:
    """The test sets a run wrote predictions for (from ``predictions_<set>.csv``), sorted."""
    return sorted(p.stem.removeprefix(PREDICTIONS_PREFIX) for p in Path(run_dir).glob(predictions_csv("*")))


def read_predictions(run_dir: str | Path, test_set: str) -> pd.DataFrame:
    """``predictions_<test_set>.csv`` with ``id`` and ``patient_id`` as strings (ids such as ``007``
    keep their zeros and join with the report tables)."""
    path = Path(run_dir) / predictions_csv(test_set)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; this run has test sets {prediction_sets(run_dir)}.")
    table = pd.read_csv(path, dtype={"id": str, "patient_id": str})
    if "id" not in table.columns:
        raise ValueError(f"{path}: no 'id' column (columns: {list(table.columns)}).")
    return table


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's config as a plain dict: Hydra's ``.hydra/config.yaml``, else ``config_resolved.yaml``
    (a run folder copied without its hidden folder); ``{}`` when neither exists."""
    run = Path(run_dir)
    for path in (run / CONFIG_DIR / HYDRA_CONFIG, run / CONFIG_RESOLVED):
        if path.is_file():
            return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {}


def read_resolved_config(run_dir: str | Path) -> dict[str, Any]:
    """``config_resolved.yaml`` (every interpolation resolved: real paths, the seed)."""
    path = Path(run_dir) / CONFIG_RESOLVED
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {Path(run_dir)} a reportsup run folder?")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def read_overrides(run_dir: str | Path) -> list[str]:
    """The command-line overrides a run was started with (``.hydra/overrides.yaml``; empty if absent)."""
    path = Path(run_dir) / CONFIG_DIR / HYDRA_OVERRIDES
    if not path.is_file():
        return []
    return [str(o) for o in (yaml.safe_load(path.read_text(encoding="utf-8")) or [])]


def best_checkpoints(run_dir: str | Path) -> list[Path]:
    """``checkpoints/best-*.ckpt``, oldest first."""
    return sorted(
        checkpoints_dir(run_dir).glob(f"{BEST_CHECKPOINT_PREFIX}*.ckpt"), key=lambda p: p.stat().st_mtime
    )


def best_checkpoints_below(root: str | Path) -> list[Path]:
    """Every ``checkpoints/best-*.ckpt`` at any depth below ``root`` (a run, or a multirun folder with one
    run per finding), sorted by path."""
    return sorted(Path(root).glob(f"**/{CHECKPOINTS}/{BEST_CHECKPOINT_PREFIX}*.ckpt"))


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """``checkpoints/last.ckpt`` when it exists."""
    path = checkpoints_dir(run_dir) / LAST_CHECKPOINT
    return path if path.is_file() else None


def best_checkpoint(run_dir: str | Path) -> Path:
    """The run's best checkpoint (``checkpoints/best-*.ckpt``, the newest), else ``last.ckpt``."""
    best = best_checkpoints(run_dir)
    if best:
        return best[-1]
    last = last_checkpoint(run_dir)
    if last is not None:
        return last
    raise FileNotFoundError(
        f"{checkpoints_dir(run_dir)}: no checkpoint ({BEST_CHECKPOINT_PREFIX}*.ckpt or {LAST_CHECKPOINT})."
    )


# --- finding runs ------------------------------------------------------------------------------------


def is_finished_run(path: str | Path) -> bool:
    """A run folder whose test step finished (it holds ``metrics.json``)."""
    return (Path(path) / METRICS_JSON).is_file()


def is_run(path: str | Path) -> bool:
    """A run folder, finished or not (Hydra wrote its ``.hydra/config.yaml``, or train.py its resolved config)."""
    path = Path(path)
    return (path / CONFIG_DIR / HYDRA_CONFIG).is_file() or (path / CONFIG_RESOLVED).is_file()


def _run_order(path: Path) -> tuple[int, str]:
    # Multirun job folders are numbers: 2 before 10.
    return len(path.name), path.name


def find_runs(root: str | Path, *, finished: bool = True, recursive: bool = False) -> list[Path]:
    """The run at ``root``, or the runs below it (a multirun folder: its job folders; ``recursive``:
    any depth). ``finished=True`` keeps runs with ``metrics.json``; ``False`` every run, e.g. to list
    the failed jobs of a multirun. Job folders sort numerically (``2`` before ``10``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder. Give run or multirun directories.")
    accept = is_finished_run if finished else is_run
    if accept(root):
        return [root]
    below: Iterator[Path] = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        (p for p in below if p.is_dir() and accept(p)), key=lambda p: (str(p.parent), *_run_order(p))
    )
