"""Word-level attention maps of an ALARM run's test reports as one HTML page (Wood et al. 2021, Fig. 5).

    reportsup-attention outputs/alarm_binary/<run> --test-set report_label --select errors

``--select errors`` shows the false positives and false negatives at the decision threshold (most
confident first), ``correct`` the correctly classified, ``all`` every report, ``--ids`` chosen reports.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from datamodules.common.run_reports import run_test_reports
from datamodules.common.tables import ReportTableError
from lightning_modules.alarm.module import ALARMClassifier
from reportsup.analysis.interpretability import attention_html, attention_page, word_weights
from reportsup.contracts.run_dir import attention_page_html, best_checkpoint


def select_reports(
    reports: pd.DataFrame, select: str, threshold: float, ids: Sequence[str] = (), limit: int = 50
) -> pd.DataFrame:
    """The reports to show, each with ``pred`` and ``kind`` (false positive, false negative, ...)."""
    # the same rule as the metrics (reportsup.analysis.metrics) and the label audit: positive when prob > threshold
    r = reports.assign(pred=(reports["prob"] > threshold).astype(int))
    r["kind"] = [
        {
            (1, 1): "true positive",
            (0, 0): "true negative",
            (0, 1): "false positive",
            (1, 0): "false negative",
        }[(y, p)]
        for y, p in zip(r["y"], r["pred"], strict=True)
    ]
    if ids:
        unknown = sorted(set(ids) - set(r["id"]))
        if unknown:
            raise ValueError(f"report ids not in this test set: {unknown[:5]}")
        return r[r["id"].isin(ids)]
    if select == "errors":
        r = r[r["y"] != r["pred"]]
    elif select == "correct":
        r = r[r["y"] == r["pred"]]
    elif select != "all":
        raise ValueError(f"--select {select!r}: choose errors, correct or all.")
    # most confident first: the errors a reader most needs to understand
    return r.assign(conf=(r["prob"] - threshold).abs()).sort_values("conf", ascending=False).head(limit)


@torch.inference_mode()
def attention_entries(model: ALARMClassifier, reports: pd.DataFrame) -> list[dict]:
    entries = []
    for row in reports.itertuples():
        batch = model.encoder.tokenize([row.text])
        _, weights = model.represent(batch["input_ids"], batch["attention_mask"])
        spans = model.encoder.word_spans(row.text)
        shown = model.encoder.preprocess(row.text)
        # Offsets refer to the preprocessed text; show the original when lower-casing kept its length.
        text = row.text if len(shown) == len(row.text) else shown
        words = word_weights(spans, weights[0].tolist())
        entries.append({**row._asdict(), "html": attention_html(text, words)})
    return entries


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="an ALARM run directory (checkpoints/, predictions_<set>.csv)")
    parser.add_argument("--test-set", default="report_label")
    parser.add_argument("--label", default=None, help="default: the model's first label")
    parser.add_argument("--select", default="errors", choices=["errors", "correct", "all"])
    parser.add_argument("--ids", nargs="*", default=(), help="show these report ids instead")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--out", default=None, help="default: <run>/attention_<set>_<label>_<select>.html")
    args = parser.parse_args(argv)
    try:
        ckpt = best_checkpoint(args.run_dir)
        model = ALARMClassifier.from_checkpoint(ckpt)
        label = args.label or model.labels[0]
        reports = run_test_reports(args.run_dir, args.test_set, label)
        threshold = model.threshold if args.threshold is None else args.threshold
        chosen = select_reports(reports, args.select, threshold, args.ids, args.limit)
    except (FileNotFoundError, ReportTableError, ValueError) as err:
        raise SystemExit(f"reportsup-attention: {err}") from None
    kind = "chosen" if args.ids else args.select
    out = Path(args.out or Path(args.run_dir) / attention_page_html(args.test_set, label, kind))
    if out.exists():
        raise SystemExit(f"reportsup-attention: {out} exists; choose another --out (nothing is overwritten).")
    title = f"Attention: {label}, {args.test_set}, {kind} ({len(chosen)} reports, {ckpt.name})"
    out.write_text(attention_page(attention_entries(model, chosen), title), encoding="utf-8")
    print(f"wrote {out} ({len(chosen)} reports)")


if __name__ == "__main__":
    main()
