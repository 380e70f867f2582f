"""The reports a finished run was tested on, with its labels and predictions (for attention maps,
embedding maps and audits over a run directory).

A run directory (DESIGN.md) holds ``config_resolved.yaml`` (which tables it read) and
``predictions_<set>.csv`` (``id``, ``<label>_true``, ``<label>_prob``); the texts come from the tables:
``data.path`` for the internal ``report_label`` test split, ``data.holdouts.<set>`` for a hold-out.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from datamodules.common.reports import INTERNAL_TEST_SET
from datamodules.common.tables import ReportTableError, read_table_file
from reportsup.contracts.run_dir import (
    CONFIG_RESOLVED,
    predictions_csv,
    read_predictions,
    read_resolved_config,
)


def run_test_reports(run_dir: str | Path, test_set: str, label: str) -> pd.DataFrame:
    """``id, text, y, prob`` of every report of ``test_set`` with a known ``label`` in the run's predictions."""
    run = Path(run_dir)
    pred_path = run / predictions_csv(test_set)
    pred = read_predictions(run, test_set)
    cols = [f"{label}_true", f"{label}_prob"]
    if not set(cols) <= set(pred.columns):
        labels = sorted(c.removesuffix("_prob") for c in pred.columns if c.endswith("_prob"))
        raise ReportTableError(f"{pred_path}: no label '{label}' (labels: {labels}).")
    data = read_resolved_config(run).get("data") or {}
    source = data.get("path") if test_set == INTERNAL_TEST_SET else (data.get("holdouts") or {}).get(test_set)
    if not source:
        raise ReportTableError(f"{run / CONFIG_RESOLVED}: no table for test set '{test_set}'.")
    table = read_table_file(Path(source))[["report_id", "text"]].astype({"report_id": str})
    out = (
        pred[["id", *cols]]
        .dropna(subset=[cols[0]])
        .merge(table.rename(columns={"report_id": "id"}), on="id", how="left")
    )
    missing = out["text"].isna()
    if missing.any():
        raise ReportTableError(
            f"{source}: {int(missing.sum())} report ids of {pred_path.name} are not in the table "
            f"(first: {out.loc[missing, 'id'].head(3).tolist()}); was the table changed after the run?"
        )
    return out.rename(columns={cols[0]: "y", cols[1]: "prob"}).astype({"y": int})[["id", "text", "y", "prob"]]
