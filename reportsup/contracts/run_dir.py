"""The run-directory contract (DESIGN.md, "Run directory contract"): every file name a run writes, in one
place; writers and readers import them from here instead of typing them out.

``outputs/<experiment>/<date>_<time>[_<slurm job>_<task>]/`` holds the names below. This module is the
bottom layer: it imports nothing else of ours.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = ".hydra"
CONFIG_RESOLVED = "config_resolved.yaml"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
SPLITS_CSV = "splits.csv"
DATA_SUMMARY = "data_summary.json"
METRICS_JSON = "metrics.json"
PLOTS = "plots"
PROVENANCE_JSON = "provenance.json"
# a multirun folder
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


def predictions_csv(test_set: str) -> str:
    """``predictions_<test_set>.csv``: ``id``, ``patient_id``, ``<label>_true``, ``<label>_prob``."""
    return f"predictions_{test_set}.csv"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS
