"""ReportSentenceDataModule: annotated report sentences for the Cross-DL discretizer (Liu et al. 2023,
"Discretizer model and training"; report dataset of 4,807 annotated Findings sentences).

Two tables:

* sentence annotations (``sentence_id``, ``report_id``, ``patient_id``, ``text``, one 0/1 column per
  region and per type of the label space; empty = unknown, masked out of the loss);
* reports (``report_id``, ``patient_id``, ``text`` and, for report-level evaluation, the gold
  abnormality matrix as ``<region>__<type>`` columns). Their Findings sections are extracted and split
  into sentences; a report without a Findings section is listed in ``reports_without_findings.csv``
  and counted, never silently dropped.

Patients are split once over both tables (60/20/20 by default), so no patient's sentences train the
model that is then scored on that patient's reports. ``max_train_sentences`` subsamples the training
sentences (seeded) for the training-size experiment (Fig. S2A). Training sentences are left-right
flipped with probability ``flip.probability`` (text and paired region labels).

Test sets: ``sentence`` (sentence-level labels) and ``report`` (the test reports' Findings
sentences, scored against their gold matrices after the max-merge of ``A = max_s r_s t_s^T``), and
one per hold-out (``holdouts``: ``{name: reports table with gold matrices}``, e.g. the paper's
prospective set, Fig. S2H), scored as ``report``; every sentence and report of a hold-out patient
leaves the development data, by default after the split is drawn (``data.split.holdout_order=split_first``,
:class:`reportsup.contracts.splits.SplitProtocol`: a hold-out added later moves no other patient).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

from datamodules.common.report_sections import (
    DEFAULT_END_HEADERS,
    DEFAULT_FINDINGS_HEADERS,
    MissingFindingsError,
    findings_sentences,
)
from datamodules.common.reports import ReportDataset, TokenizedLoaders
from datamodules.common.tables import ReportTableError, read_report_table
from datamodules.crossdl.sentences.text_flip import ENGLISH_SIDE_WORDS, LeftRightFlip
from reportsup.contracts.labels.crossdl import LabelSpace
from reportsup.contracts.run_dir import REPORTS_WITHOUT_FINDINGS
from reportsup.contracts.splits import RunSplit, SplitError, SplitProtocol

SENTENCE_COLUMNS = ("sentence_id", "report_id", "patient_id", "text")


class FlipAugmentedDataset(Dataset):
    """Training sentences, each left-right flipped with probability ``p`` when drawn."""

    def __init__(self, base: ReportDataset, flip: LeftRightFlip, p: float, n_regions: int) -> None:
        self.base, self.flip, self.p, self.n_regions = base, flip, p, n_regions

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        if self.p > 0 and random.random() < self.p:  # seeded per worker by seed_everything(workers=True)
            targets = item["targets"].clone()
            targets[: self.n_regions] = item["targets"][torch.as_tensor(self.flip.permutation)]
            item = {**item, "text": self.flip.flip_text(item["text"]), "targets": targets}
        return item


def read_sentence_table(path: str | Path, space: LabelSpace) -> pd.DataFrame:
    """Sentence annotations validated against the label space (file, row and column in every error)."""
    return read_report_table(
        path,
        [*space.regions, *space.types],
        id_column="sentence_id",
        required=SENTENCE_COLUMNS,
        path_key="data.sentences_path",
    )


def sentences_of_reports(
    reports: pd.DataFrame, language: str, findings_headers: Sequence[str], end_headers: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per Findings sentence (``report_index``, ``report_id``, ``patient_id``, ``text``) and the
    reports that have no Findings section."""
    rows, missing = [], []
    for i, (rid, pid, text) in enumerate(
        zip(reports["report_id"], reports["patient_id"], reports["text"], strict=True)
    ):
        try:
            sentences = findings_sentences(text, language, findings_headers, end_headers)
        except MissingFindingsError:
            missing.append(
                {
                    "report_id": rid,
                    "patient_id": pid,
                    "problem": "no Findings section",
                    "text_start": text[:120],
                }
            )
            continue
        rows.extend({"report_index": i, "report_id": rid, "patient_id": pid, "text": s} for s in sentences)
    cols = ["report_index", "report_id", "patient_id", "text"]
    return pd.DataFrame(rows, columns=cols), pd.DataFrame(
        missing, columns=["report_id", "patient_id", "problem", "text_start"]
    )


class ReportSentenceDataModule(TokenizedLoaders, pl.LightningDataModule):
    """Sentence annotations + reports -> patient-level splits -> tokenised sentence batches."""

    def __init__(
        self,
        sentences_path: str | None,
        reports_path: str | None = None,
        label_space: Mapping[str, Any] | None = None,
        language: str = "en",
        findings_headers: Sequence[str] = DEFAULT_FINDINGS_HEADERS,
        end_headers: Sequence[str] = DEFAULT_END_HEADERS,
        split: Mapping[str, Any] | None = None,
        max_train_sentences: int | None = None,
        flip: Mapping[str, Any] | None = None,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        output_dir: str | None = None,
        holdouts: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if not sentences_path:
            raise ReportTableError(
                "data.sentences_path is not set: point it at your sentence-annotation table "
                "(sentence_id, report_id, patient_id, text, region and type columns) or run with demo=true."
            )
        self.sentences_path, self.reports_path = sentences_path, reports_path
        self.space = LabelSpace.from_config(**(label_space or {}))
        self.language = language
        self.findings_headers, self.end_headers = list(findings_headers), list(end_headers)
        self.split_cfg = dict(split or {})
        # Split first: scoring a trained discretizer on a new hold-out set moves no other patient.
        self.protocol = SplitProtocol.from_config(self.split_cfg, holdout_order="split_first")
        self.max_train_sentences = max_train_sentences
        flip = dict(flip or {})
        self.flip_probability = float(flip.get("probability", 0.5))
        self.flip = LeftRightFlip(self.space, flip.get("word_map") or ENGLISH_SIDE_WORDS)
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.output_dir = Path(output_dir) if output_dir else None
        self.holdout_paths = dict(holdouts or {})
        for name, path in self.holdout_paths.items():
            if name in ("train", "val", "test", "sentence", "report"):
                raise ReportTableError(
                    f"data.holdouts.{name}: '{name}' names one of the internal sets; rename the hold-out."
                )
            if not path:
                raise ReportTableError(f"data.holdouts.{name} has no path: give its reports table.")
        self.datasets: dict[str, Dataset] = {}
        self.tables: dict[str, pd.DataFrame] = {}
        self.gold: dict[str, pd.DataFrame] = {}  # report-level test set -> its reports with gold matrices
        self.summary: dict[str, Any] = {}

    @property
    def labels(self) -> list[str]:
        return [*self.space.regions, *self.space.types]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        sentences = read_sentence_table(self.sentences_path, self.space)
        matrix_cols = self.space.matrix_columns()
        reports = None
        if self.reports_path:
            probe = read_report_table(self.reports_path, [], path_key="data.reports_path")
            gold = [c for c in matrix_cols if c in probe.columns]
            if gold and len(gold) != len(matrix_cols):
                raise ReportTableError(
                    f"{self.reports_path}: has {len(gold)} of the {len(matrix_cols)} gold matrix "
                    f"columns <region>__<type>; e.g. missing {sorted(set(matrix_cols) - set(gold))[:3]}."
                )
            reports = (
                read_report_table(self.reports_path, gold, path_key="data.reports_path") if gold else probe
            )
        holdouts = {
            name: read_report_table(path, matrix_cols, path_key=f"data.holdouts.{name}")
            for name, path in self.holdout_paths.items()
        }
        # One split over both tables, so no patient's sentences train the model scored on their reports.
        n_sentences = len(sentences)
        rows = pd.concat(
            [sentences.assign(id=sentences["sentence_id"])]
            + ([reports.assign(id=reports["report_id"])] if reports is not None else []),
            ignore_index=True,
        )
        run_split = self.protocol.assign(
            rows[["id", "patient_id"]],
            {name: table.assign(id=table["report_id"]) for name, table in holdouts.items()},
            source=str(self.sentences_path),
            required=(),
            what="sentences",
        )
        is_sentence = np.arange(len(rows)) < n_sentences
        run_split.require(where=is_sentence)  # every split needs sentences, not only reports
        removed_sentences = run_split.removed(where=is_sentence)
        removed_reports = run_split.removed(where=~is_sentence)
        split = run_split.split.to_numpy()
        sentence_split, report_split = split[:n_sentences], split[n_sentences:]
        train = sentences.loc[sentence_split == "train"]
        if self.max_train_sentences is not None:
            if not 1 <= self.max_train_sentences <= len(train):
                raise SplitError(
                    f"data.max_train_sentences={self.max_train_sentences}: give 1 to {len(train)}, the "
                    "number of sentences in the training split."
                )
            train = train.sample(n=self.max_train_sentences, random_state=self.protocol.seed)
        parts = {
            "train": train,
            "val": sentences.loc[sentence_split == "val"],
            "sentence": sentences.loc[sentence_split == "test"],
        }
        for name, part in parts.items():
            ds = ReportDataset(part, part[self.labels].to_numpy(dtype=np.float64))
            self.datasets[name] = (
                FlipAugmentedDataset(ds, self.flip, self.flip_probability, len(self.space.regions))
                if name == "train"
                else ds
            )
            self.tables[name] = ds.table
        missing = pd.DataFrame()
        if reports is not None and all(c in reports.columns for c in matrix_cols):
            test_reports = reports.loc[report_split == "test"].reset_index(drop=True)
            rows, missing = sentences_of_reports(
                test_reports, self.language, self.findings_headers, self.end_headers
            )
            self._add_report_set("report", test_reports, rows)
        for name, table in holdouts.items():
            rows, h_missing = sentences_of_reports(
                table, self.language, self.findings_headers, self.end_headers
            )
            if rows.empty:
                raise ReportTableError(
                    f"{self.holdout_paths[name]} (data.holdouts.{name}): no report has a Findings section "
                    f"(headers {self.findings_headers}); set data.findings_headers for these reports."
                )
            self._add_report_set(name, table, rows)
            missing = pd.concat([missing, h_missing.assign(test_set=name)], ignore_index=True)
        self.summary = {
            "sentences_path": str(self.sentences_path),
            "reports_path": str(self.reports_path),
            "sizes": {k: len(v) for k, v in self.datasets.items()},
            "report_level_test_reports": {name: len(gold) for name, gold in self.gold.items()},
            "holdouts": {
                name: {
                    "path": str(self.holdout_paths[name]),
                    "reports": len(table),
                    "development_sentences_removed": removed_sentences[name],
                    "development_reports_removed": removed_reports[name],
                }
                for name, table in holdouts.items()
            },
            "reports_without_findings": len(missing),
            "flip_probability": self.flip_probability,
            "max_train_sentences": self.max_train_sentences,
            "positives_train": {lb: int(np.nansum(train[lb] == 1)) for lb in self.labels},
        }
        if len(missing):
            rank_zero_info(
                f"[reportsup] {len(missing)} test report(s) have no Findings section (headers "
                f"{self.findings_headers}); listed in reports_without_findings.csv and not scored."
            )
        rank_zero_info(f"[reportsup] data: {json.dumps(self.summary['sizes'])}")
        self._write_outputs(run_split, missing)

    def _write_outputs(self, run_split: RunSplit, missing: pd.DataFrame) -> None:
        if self.output_dir is None or (self.trainer is not None and not self.trainer.is_global_zero):
            return
        # splits.csv (or on resume: checked against the split this run trained on) and data_summary.json
        run_split.save(self.output_dir, data_summary=self.summary)
        if len(missing):
            missing.to_csv(self.output_dir / REPORTS_WITHOUT_FINDINGS, index=False)

    # -- loaders -----------------------------------------------------------------------------
    @property
    def train_texts(self) -> list[str]:
        self.setup()
        return self.tables["train"]["text"].tolist()

    def _add_report_set(self, name: str, gold: pd.DataFrame, rows: pd.DataFrame) -> None:
        """A report-level test set: its Findings sentences (labels unknown) and its gold matrices."""
        self.tables[name] = rows
        self.gold[name] = gold.reset_index(drop=True)
        self.datasets[name] = ReportDataset(rows, np.full((len(rows), len(self.labels)), np.nan))

    @property
    def report_level_sets(self) -> list[str]:
        """The test sets scored as report matrices: ``report`` and every hold-out."""
        return list(self.gold)

    def gold_table(self, name: str) -> pd.DataFrame:
        """The reports (with gold matrices) of a report-level test set, indexed by ``report_index``."""
        return self.gold[name]

    @property
    def test_set_names(self) -> list[str]:
        return [n for n in ("sentence", *self.gold) if n in self.datasets]

    def test_table(self, name: str) -> pd.DataFrame:
        return self.tables[name]
