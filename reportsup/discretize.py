"""A trained Cross-DL discretizer applied to a report table, streamed in chunks: the library behind
``reportsup-discretize`` (:mod:`reportsup.cli.discretize`) and :class:`reportsup.SentenceDiscretizer`.

    reportsup-discretize outputs/crossdl_discretizer/<run> \\
        reports.csv pseudo_labels.parquet [--batch-size 256] [--chunk-size 5000] [--probabilities]
    reportsup-discretize outputs/crossdl_discretizer/<run> reports.csv pseudo_labels/   # a folder

The model: a run folder (its best checkpoint), a checkpoint or a ``reportsup-export`` folder.
Input: CSV, Parquet or JSONL with ``report_id`` and ``text`` (``patient_id``, ``scan_id`` and any
``image`` column are passed through). Output (CSV or Parquet, by suffix), one row per report, in input
order: the pass-through columns, ``status`` (``ok`` / ``no_findings``), ``n_sentences``, the binary
abnormality matrix A = max_s r_s t_s^T after thresholding (Liu et al. 2023) as 76 columns
``<region>__<type>``, the scan-level labels ``scan__<type>`` (union over all regions incl. other and
unclear), and ``unclear`` (the paper zeroes the MIL losses of such scans); with ``--probabilities``
also the soft matrix as ``<region>__<type>_prob``. A report without a Findings section gets
``status=no_findings`` and empty labels: it stays visible in the output and is counted at the end.
Sentence splitting (language, headers) comes from the checkpoint's label manifest. An existing output
file is never overwritten. An output without a ``.csv``/``.parquet`` suffix is a labelling folder
(:mod:`reportsup.contracts.label_folder`, written by :func:`reportsup.labelling.label_archive`): the same
columns as a resumable Parquet dataset in ``<folder>/parts``, with its manifest, ``errors.csv`` (rows
without an id or text) and ``runs.jsonl`` beside. ``--rename OLD=NEW`` / ``--columns-map FILE.json`` rename
output columns in either form.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from datamodules.common.report_sections import (
    DEFAULT_END_HEADERS,
    DEFAULT_FINDINGS_HEADERS,
    MissingFindingsError,
    findings_sentences,
)
from datamodules.common.tables import ReportTableError, count_rows, read_chunks
from lightning_modules.crossdl.discretizer.module import DiscretizerModule
from reportsup.api.report_models import load_report_model
from reportsup.contracts.label_folder import check_columns_map
from reportsup.contracts.labels.crossdl import LabelSpace, report_matrices

PASS_THROUGH = ("report_id", "patient_id", "scan_id", "image")


def sentence_cutoffs(model: DiscretizerModule) -> np.ndarray:
    """Per sentence label (regions, then types), the probability a sentence must reach to count
    (``>=``): the paper's 0.5 (``model.threshold``), or the cut-off chosen on the validation sentences
    where the checkpoint's manifest has one (``model.threshold=validation``, issue 22 item 3)."""
    chosen = getattr(model, "label_thresholds", None) or {}
    return np.array(
        [
            float(chosen[label]["cutoff"]) if label in chosen else float(model.threshold)
            for label in model.labels
        ],
        dtype=np.float32,
    )


class Discretizer:
    """A trained discretizer applied to whole reports: Findings -> sentences -> r, t -> matrices.

    ``model``: a :class:`DiscretizerModule`, or where to load one from (a run folder, a checkpoint read
    with ``weights_only=True``, a ``reportsup-export`` folder)."""

    def __init__(
        self,
        model: DiscretizerModule | str | Path,
        batch_size: int = 256,
        device: str | None = None,
        dedupe: bool = True,
        trust_checkpoint: bool = False,
    ) -> None:
        if not isinstance(model, DiscretizerModule):
            model, _ = load_report_model(
                model, trust_checkpoint=trust_checkpoint, allowed=(DiscretizerModule.TASK,)
            )
        self.model = model.eval()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.space: LabelSpace = self.model.space
        splitting = dict(self.model.hparams.get("sentence_splitting") or {})
        self.language = splitting.get("language", "en")
        self.findings_headers = splitting.get("findings_headers") or list(DEFAULT_FINDINGS_HEADERS)
        self.end_headers = splitting.get("end_headers") or list(DEFAULT_END_HEADERS)
        self.batch_size = batch_size
        self.dedupe = dedupe
        self.cutoffs = sentence_cutoffs(self.model)

    def sentence_probabilities(self, sentences: Sequence[str]) -> np.ndarray:
        """(S, regions + types) probabilities. Radiologists reuse template sentences ("The midline
        structures are centered."), so each distinct sentence is scored once (``dedupe``)."""
        if not self.dedupe:
            return self._score(sentences)
        unique, inverse = np.unique(np.asarray(sentences, dtype=object), return_inverse=True)
        return self._score(list(unique))[inverse]

    @torch.inference_mode()
    def _score(self, sentences: Sequence[str]) -> np.ndarray:
        """Model probabilities, longest sentences batched together (little padding)."""
        out = np.zeros((len(sentences), len(self.model.labels)), dtype=np.float32)
        order = np.argsort([-len(s) for s in sentences], kind="stable")
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = {
                k: v.to(self.device)
                for k, v in self.model.encoder.tokenize([sentences[i] for i in idx]).items()
            }
            out[idx] = torch.sigmoid(self.model(**batch).float()).cpu().numpy()
        return out

    def label_chunk(self, chunk: pd.DataFrame, probabilities: bool = False) -> pd.DataFrame:
        missing = [c for c in ("report_id", "text") if c not in chunk.columns]
        if missing:
            raise ReportTableError(f"input table: missing column(s) {missing}; found {list(chunk.columns)}.")
        sentences, owner, n_sentences, status = [], [], [], []
        for i, text in enumerate(chunk["text"].astype(str)):
            try:
                found = findings_sentences(text, self.language, self.findings_headers, self.end_headers)
                status.append("ok")
            except MissingFindingsError:
                found = []
                status.append("no_findings")
            sentences.extend(found)
            owner.extend([i] * len(found))
            n_sentences.append(len(found))
        n_r = len(self.space.regions)
        probs = (
            self.sentence_probabilities(sentences)
            if sentences
            else np.zeros((0, len(self.model.labels)), np.float32)
        )
        hard = report_matrices(
            np.asarray(owner), probs[:, :n_r], probs[:, n_r:], len(chunk), threshold=self.cutoffs
        )
        out = chunk[[c for c in PASS_THROUGH if c in chunk.columns]].reset_index(drop=True)
        out["status"], out["n_sentences"] = status, n_sentences
        no_findings = np.array(status) != "ok"
        # explicit widths, not -1: a chunk without a report to label (all rows in errors.csv) has 0 rows
        n_cells = len(self.space.matrix_columns())
        cells = pd.DataFrame(
            hard.reshape(len(chunk), n_cells).astype("int8"), columns=self.space.matrix_columns()
        ).astype("Int8")
        scan = pd.DataFrame(
            hard.max(axis=1).astype("int8"), columns=[f"scan__{t}" for t in self.space.types]
        ).astype("Int8")
        unclear = pd.Series(
            hard[:, self.space.regions.index(self.space.unclear)].max(axis=1).astype("int8"), name="unclear"
        ).astype("Int8")
        parts = [out, cells, scan, unclear]
        if probabilities:
            soft = report_matrices(
                np.asarray(owner), probs[:, :n_r], probs[:, n_r:], len(chunk), threshold=None
            )
            parts.append(
                pd.DataFrame(
                    soft.reshape(len(chunk), n_cells),
                    columns=[f"{c}_prob" for c in self.space.matrix_columns()],
                )
            )
        result = pd.concat(parts, axis=1)
        label_cols = [c for c in result.columns if c not in (*PASS_THROUGH, "status", "n_sentences")]
        result.loc[no_findings, label_cols] = pd.NA  # no Findings: unknown, not "normal"
        return result


class ChunkWriter:
    """Appends chunks to a CSV or Parquet file (one Parquet row group per chunk)."""

    def __init__(self, path: Path) -> None:
        if path.suffix.lower() not in (".csv", ".parquet"):
            raise ReportTableError(f"{path}: write .csv or .parquet.")
        self.path, self._parquet, self._first = path, None, True

    def write(self, frame: pd.DataFrame) -> None:
        if self.path.suffix.lower() == ".csv":
            frame.to_csv(self.path, mode="w" if self._first else "a", header=self._first, index=False)
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        self._first = False

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()


def discretize_file(
    checkpoint: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int = 256,
    chunk_size: int = 5000,
    probabilities: bool = False,
    progress: bool = True,
    trust_checkpoint: bool = False,
    columns_map: dict[str, str] | None = None,
) -> dict[str, float]:
    """Label every report of ``input_path`` into the file ``output_path``; returns counts and reports per
    second. ``columns_map`` renames output columns (a name the discretizer does not write is refused).
    A folder output (resumable, a Parquet dataset): :func:`reportsup.labelling.label_archive`."""
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.exists():
        raise FileExistsError(f"{output_path} exists; choose a new output file (nothing is overwritten).")
    if not input_path.exists():
        raise FileNotFoundError(f"{input_path}: input table not found.")
    discretizer = Discretizer(checkpoint, batch_size=batch_size, trust_checkpoint=trust_checkpoint)
    writer = ChunkWriter(output_path)
    counts = {"reports": 0, "no_findings": 0, "sentences": 0}
    start = time.perf_counter()
    bar = tqdm(total=count_rows(input_path), unit="report", disable=not progress, desc="discretize")
    try:
        for chunk in read_chunks(input_path, chunk_size):
            labelled = discretizer.label_chunk(chunk, probabilities)
            if columns_map:
                check_columns_map(columns_map, list(labelled.columns))
            writer.write(labelled.rename(columns=columns_map or {}))
            counts["reports"] += len(labelled)
            counts["no_findings"] += int((labelled["status"] != "ok").sum())
            counts["sentences"] += int(labelled["n_sentences"].sum())
            bar.update(len(labelled))
    finally:
        writer.close()
        bar.close()
    counts["seconds"] = time.perf_counter() - start
    counts["reports_per_second"] = counts["reports"] / max(counts["seconds"], 1e-9)
    return counts
