"""The end of a run: attention highlights of its most confident errors, then ``report.html`` (issue 22 item 5).

:func:`finish_run_report` is called once by ``train.py`` after ``trainer.test`` (rank 0). The page itself is
a pure function of the run folder (:mod:`reportsup.analysis.run_report`); what the folder cannot give it is
the attention of the tested model on the reports it got wrong, so this module, above the analysis layer,
computes it with the model in memory (the tested weights: ``trainer.test`` loaded the best checkpoint)
for the :data:`~reportsup.analysis.run_report.N_ERRORS` most confident errors per test set and label, and
stores the texts and word weights in ``report_attention.json`` for the page (Wood et al. 2021, Fig. 5; the
same sub-word-to-word merge as ``reportsup-attention``).

Only models with attention pooling have highlights (ALARM: ``represent`` returns the pooling weights and
the encoder gives word offsets); other models' pages list their errors without them, and say so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from datamodules.common.run_reports import run_test_reports
from datamodules.common.tables import ReportTableError
from reportsup.analysis.interpretability import word_weights
from reportsup.analysis.run_report import (
    confident_errors,
    decision_threshold,
    write_run_report,
)
from reportsup.contracts.run_dir import (
    REPORT_ATTENTION_JSON,
    prediction_sets,
    read_config,
    read_metrics,
    read_predictions,
    write_json,
)

log = logging.getLogger(__name__)


def has_attention(model: Any) -> bool:
    """A model whose pooling weights can be shown per word: ``represent`` + an encoder with word offsets."""
    encoder = getattr(model, "encoder", None)
    return callable(getattr(model, "represent", None)) and callable(getattr(encoder, "word_spans", None))


@torch.inference_mode()
def report_attention(model: Any, text: str) -> dict[str, Any]:
    """``{text, words: [[start, end, weight]]}`` of one report: the pooling weights merged to words, with
    offsets into the text shown (the original, unless preprocessing changed its length)."""
    was_training = model.training
    model.eval()  # dropout off: the weights of the tested model, as in the metrics
    try:
        batch = model.encoder.tokenize([text])
        device = next(model.parameters()).device
        _, weights = model.represent(batch["input_ids"].to(device), batch["attention_mask"].to(device))
    finally:
        model.train(was_training)
    shown = model.encoder.preprocess(text)
    words = word_weights(model.encoder.word_spans(text), weights[0].float().cpu().tolist())
    return {
        "text": text if len(shown) == len(text) else shown,
        "words": [[s, e, round(w, 5)] for s, e, w in words],  # 5 decimals: shading, not analysis
    }


def error_attention(run_dir: Path, model: Any) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{set: {label: [{id, text, words}]}}`` for the most confident errors of every test set and label,
    at the threshold of the metrics (the same selection the page makes)."""
    config, metrics = read_config(run_dir), read_metrics(run_dir)
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for test_set in prediction_sets(run_dir):
        per_label: Mapping[str, Any] = metrics.get(test_set) or {}
        pred = read_predictions(run_dir, test_set)
        for label in per_label:
            chosen = confident_errors(pred, label, decision_threshold(config, per_label[label]))
            if chosen.empty:
                continue
            texts = run_test_reports(run_dir, test_set, label).set_index("id")["text"]
            out.setdefault(test_set, {})[label] = [
                {"id": i, **report_attention(model, str(texts[i]))} for i in chosen["id"] if i in texts.index
            ]
    return out


def finish_run_report(run_dir: str | Path, model: Any) -> Path | None:
    """Attention of the errors (models with attention pooling), then ``report.html``; its path, or None
    when the page could not be written (a warning says why and how to regenerate it: the run itself
    finished and its files stay as they are)."""
    run = Path(run_dir)
    if has_attention(model):
        try:
            write_json(run / REPORT_ATTENTION_JSON, error_attention(run, model))
        except (ReportTableError, FileNotFoundError, KeyError, ValueError) as err:
            # The page still lists the errors; it says there are no highlights.
            log.warning("[reportsup] report.html without attention highlights: %s", err)
    try:
        path = write_run_report(run)
    except (OSError, ValueError) as err:
        log.warning(
            "[reportsup] report.html not written (%s); after fixing, regenerate it with "
            "`python -m reportsup.analysis.run_report %s`",
            err,
            run,
        )
        return None
    log.info("[reportsup] run report: %s", path)
    return path
