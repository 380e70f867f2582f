"""``ReportLabeller``: a trained report classifier (ALARM or spine report NLP) as a Python object.

ALARM (Wood et al. 2021, Eur Radiol, "Modelling", Fig. 2): BioBERT + attention pooling + MLP, one
probability per label (``abnormal`` or a granular category). Spine report NLP ("Extracting Structured
Information From Radiological Reports"): a BERT sequence classifier per radiological finding. Both
give one sigmoid probability per label; a label is 1 when its probability exceeds its threshold in the
label manifest: the one chosen on validation (``model.threshold=validation``, issue 22 item 3) or the
model's single ``threshold``. The batching, mixed precision and quantisation are
:class:`reportsup.labelling.ClassifierLabeller`'s, the same as ``reportsup-label`` uses (``quantize="int8"``
labels with the int8 model itself; the object keeps the fp32 model for :meth:`ReportLabeller.save_pretrained`).
What ``reportsup-label`` wrote is read back with
:func:`reportsup.contracts.label_folder.read_label_folder` (or ``pandas.read_parquet("<folder>/parts")``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from datamodules.common.tables import ReportTableError
from lightning_modules.common.report_model import ReportModel
from reportsup.api.inputs import Reports, reports_table
from reportsup.api.report_models import CLASSIFIER_TASKS, ModelSource, load_report_model
from reportsup.labelling import BATCH_TOKENS, ClassifierLabeller, check_rows

#: rows of a predict() input that a message names at most
SHOW_ROWS = 10


class ReportLabeller:
    """Label radiology reports with a trained ALARM or spine report classifier.

    Load one with :meth:`from_pretrained` (a run folder, a Lightning checkpoint read without
    unpickling, or a folder written by ``reportsup-export`` / :meth:`save_pretrained`), then
    :meth:`predict` report texts, a DataFrame or a CSV / Parquet / JSONL table. The result has the
    columns ``reportsup-label`` writes: ``report_id`` (and ``patient_id`` when given), then per label
    ``<label>_prob`` and ``<label>`` (0/1 at the label's entry of :attr:`thresholds`).

    Example (the checkpoint is a tiny ALARM model in the repository's test data)::

        >>> from reportsup import ReportLabeller
        >>> labeller = ReportLabeller.from_pretrained("tests/data/alarm_pre_layout_v0.1.0.ckpt")
        >>> labeller.labels, labeller.threshold
        (['abnormal', 'mass'], 0.5)
        >>> table = labeller.predict(["No acute intracranial abnormality.", "A large left frontal mass."])
        >>> list(table.columns)
        ['report_id', 'abnormal_prob', 'abnormal', 'mass_prob', 'mass']
        >>> table["report_id"].tolist()
        ['0', '1']
        >>> bool(((table["abnormal_prob"] > 0) & (table["abnormal_prob"] < 1)).all())
        True

    Args:
        model: a trained :class:`~lightning_modules.alarm.module.ALARMClassifier` or
            :class:`~lightning_modules.spine.report_module.SpineReportClassifier`.
        source: where it was loaded from (set by :meth:`from_pretrained`; used by :meth:`save_pretrained`).
        batch_size, device, precision, quantize, batch_tokens: as ``reportsup-label``'s options
            (``precision`` ``32``/``bf16``/``fp16``; ``quantize="int8"``: CPU dynamic quantisation).
    """

    def __init__(
        self,
        model: ReportModel,
        source: ModelSource | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        precision: str = "32",
        quantize: str | None = None,
        batch_tokens: int | None = BATCH_TOKENS,
    ) -> None:
        if model.TASK not in CLASSIFIER_TASKS:
            raise ValueError(
                f"ReportLabeller labels with report classifiers {list(CLASSIFIER_TASKS)}; this model's task is "
                f"{model.TASK!r} (the Cross-DL discretizer: reportsup.SentenceDiscretizer)."
            )
        self.model = model.eval()  # kept in fp32: save_pretrained exports it, not a quantised copy
        self.source = source
        self._labeller = ClassifierLabeller(
            model, batch_size, device, precision, quantize, compile=False, batch_tokens=batch_tokens
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        precision: str = "32",
        quantize: str | None = None,
        trust_checkpoint: bool = False,
    ) -> ReportLabeller:
        """Load from a run folder (its best checkpoint), a ``.ckpt`` (``torch.load(weights_only=True)``;
        ``trust_checkpoint=True`` allows unpickling a trusted file that needs it) or an exported folder
        (safetensors; works offline: the encoder is rebuilt from the stored config and tokenizer)."""
        model, source = load_report_model(path, trust_checkpoint=trust_checkpoint, allowed=CLASSIFIER_TASKS)
        return cls(model, source, batch_size, device, precision, quantize)

    @property
    def labels(self) -> list[str]:
        """Label names in output order."""
        return list(self._labeller.labels)

    @property
    def threshold(self) -> float:
        """The model's single decision threshold (0.5 unless trained with another number); the 0/1
        columns use :attr:`thresholds`, which differ from it where thresholds were chosen on validation."""
        return float(self._labeller.threshold)

    @property
    def thresholds(self) -> dict[str, float]:
        """Per label, the threshold its 0/1 column applies (a label is 1 when its probability is above
        it): chosen on the validation set where the checkpoint carries one (``model.threshold=validation``,
        issue 22 item 3), else :attr:`threshold`."""
        return dict(self._labeller.thresholds)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities ``(n_texts, n_labels)`` in :attr:`labels` order, without input checks."""
        return self._labeller.probabilities(texts)

    def predict(
        self, reports: Reports, *, text_column: str = "text", id_column: str = "report_id"
    ) -> pd.DataFrame:
        """Label ``reports``: a list of texts, a DataFrame or a ``.csv``/``.parquet``/``.jsonl`` path.

        Rows that cannot be labelled (empty text, text decoded from a wrong encoding, no id, a repeated
        id) raise :class:`~datamodules.common.tables.ReportTableError` naming them; ``reportsup-label``
        instead lists them in ``errors.csv`` and labels the rest."""
        table = reports_table(reports, text_column, id_column)
        valid, errors = check_rows(table, 0, set())
        if len(errors):
            where = str(reports) if isinstance(reports, (str, Path)) else "reports"
            # check_rows numbers file rows with the header as row 1; here: data rows from 0
            rows = [
                f"row {row - 2} (report_id {rid!r}): {reason}"
                for row, rid, reason in errors.head(SHOW_ROWS).itertuples(index=False)
            ]
            more = f" and {len(errors) - SHOW_ROWS} more" if len(errors) > SHOW_ROWS else ""
            raise ReportTableError(
                f"{where}: {len(errors)} report(s) cannot be labelled: {'; '.join(rows)}{more}. "
                "Fix or drop them (reportsup-label lists such rows in errors.csv and labels the rest)."
            )
        return self._labeller.label_chunk(valid)

    def save_pretrained(self, out_dir: str | Path, run_dir: str | Path | None = None) -> Path:
        """Write this model as an exported folder (see :func:`reportsup.export.export_model`); the model
        card takes its training data and test metrics from ``run_dir`` (default: the run the
        checkpoint came from, if any)."""
        from reportsup.export import export_report_model

        return export_report_model(self.model, out_dir, source=self.source, run_dir=run_dir)

    def __repr__(self) -> str:
        where = f", source={str(self.source.path)!r}" if self.source else ""
        return f"ReportLabeller(task={self.model.TASK!r}, labels={self.labels}, threshold={self.threshold}{where})"
