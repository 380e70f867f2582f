"""``SentenceDiscretizer``: a trained Cross-DL discretizer as a Python object.

Liu et al. 2023 (Cell Rep Med, STAR Methods "Discretizer model and training"): a BERT reads each
Findings sentence and gives region probabilities r and abnormality-type probabilities t; a report's
binary abnormality matrix is A = max_s r_s t_s^T after thresholding. The work is
:class:`reportsup.discretize.Discretizer`'s, the same as ``reportsup-discretize`` uses.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from lightning_modules.crossdl.discretizer.module import DiscretizerModule
from reportsup.api.inputs import Reports, reports_table
from reportsup.api.report_models import ModelSource, load_report_model
from reportsup.discretize import Discretizer


class SentenceDiscretizer:
    """Turn head-CT reports into region x abnormality-type labels with a trained Cross-DL discretizer.

    :meth:`predict` returns the table ``reportsup-discretize`` writes, one row per report in input
    order: the pass-through columns (``report_id``, ``patient_id``, ``scan_id``, ``image``), ``status``
    (``ok`` / ``no_findings``), ``n_sentences``, the binary matrix as ``<region>__<type>`` columns, the
    scan-level ``scan__<type>`` labels and ``unclear``; with ``probabilities=True`` also the soft matrix.
    Reports without a Findings section keep their row with ``status=no_findings`` and empty labels.

    Example (``path``: a run folder, a ``.ckpt`` or an exported folder of a discretizer)::

        >>> from reportsup import SentenceDiscretizer
        >>> discretizer = SentenceDiscretizer.from_pretrained(path)
        >>> table = discretizer.predict(["FINDINGS: Hypodensity in the left frontal lobe. IMPRESSION: Infarct."])
        >>> table.loc[0, "status"], int(table.loc[0, "n_sentences"])
        ('ok', 1)
        >>> [c for c in table.columns if c.startswith("scan__")] == [f"scan__{t}" for t in discretizer.types]
        True
    """

    def __init__(
        self,
        model: DiscretizerModule,
        source: ModelSource | None = None,
        batch_size: int = 256,
        device: str | torch.device | None = None,
    ) -> None:
        self.model = model.eval()
        self.source = source
        self._discretizer = Discretizer(
            model, batch_size=batch_size, device=None if device is None else str(device)
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        batch_size: int = 256,
        device: str | torch.device | None = None,
        trust_checkpoint: bool = False,
    ) -> SentenceDiscretizer:
        """Load from a run folder (its best checkpoint), a ``.ckpt`` (``torch.load(weights_only=True)``;
        ``trust_checkpoint=True`` allows unpickling a trusted file that needs it) or an exported folder."""
        model, source = load_report_model(
            path, trust_checkpoint=trust_checkpoint, allowed=(DiscretizerModule.TASK,)
        )
        return cls(model, source, batch_size, device)

    @property
    def labels(self) -> list[str]:
        """The model's outputs per sentence: the regions, then the abnormality types."""
        return list(self.model.labels)

    @property
    def regions(self) -> list[str]:
        return list(self._discretizer.space.regions)

    @property
    def types(self) -> list[str]:
        return list(self._discretizer.space.types)

    @property
    def threshold(self) -> float:
        """The fixed threshold (the paper's 0.5); :attr:`cutoffs` are what is applied."""
        return float(self.model.threshold)

    @property
    def cutoffs(self) -> dict[str, float]:
        """Per sentence label, the probability a sentence must reach (``>=``) to count in the matrix:
        the cut-off chosen on validation (``model.threshold=validation``) where there is one."""
        return dict(zip(self.labels, self._discretizer.cutoffs.tolist(), strict=True))

    def predict(
        self,
        reports: Reports,
        *,
        probabilities: bool = False,
        text_column: str = "text",
        id_column: str = "report_id",
    ) -> pd.DataFrame:
        """Label ``reports`` (a list of texts, a DataFrame or a ``.csv``/``.parquet``/``.jsonl`` path)."""
        return self._discretizer.label_chunk(reports_table(reports, text_column, id_column), probabilities)

    def save_pretrained(self, out_dir: str | Path, run_dir: str | Path | None = None) -> Path:
        """Write this model as an exported folder (see :func:`reportsup.export.export_model`)."""
        from reportsup.export import export_report_model

        return export_report_model(self.model, out_dir, source=self.source, run_dir=run_dir)

    def __repr__(self) -> str:
        return f"SentenceDiscretizer(regions={len(self.regions)}, types={self.types}, threshold={self.threshold})"
