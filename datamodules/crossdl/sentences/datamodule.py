"""ReportSentenceDataModule: annotated report sentences for the Cross-DL discretizer (Liu et al. 2023,
"Discretizer model and training"; report dataset of 4,807 annotated Findings sentences).

Two tables:

* sentence annotations (``sentence_id``, ``report_id``, ``patient_id``, ``text``, one 0/1 column per
  region and per type of the label space; empty = unknown, masked out of the loss);
* reports (``report_id``, ``patient_id``, ``text`` and, for report-level evaluation, the gold
  abnormality matrix as ``<region>__<type>`` columns). Their Findings sections are extracted and split
  into sentences; a report without a Findings section is listed in ``reports_without_findings.csv``
  and counted, never silently dropped.

The split (``data.split``, :class:`reportsup.contracts.splits.SplitProtocol`) has two forms:

* ``unit: row`` (the paper's experiment): the sentences are split at random, as the paper's 4,807 into
  3,000 / 904 / 903 ("Datasets"), and the reports by patient. Identical template sentences, and sentences
  of one report, can sit in training and test, and a test report's patient may have trained the model.
* ``unit: patient`` (the stricter option, and the default of this class): patients are split once over
  both tables, so no patient's sentences train the model that is then scored on that patient's reports.

``max_train_sentences`` subsamples the training sentences (seeded; paper: 1,500 of the 3,000) for the
training-size experiment (Fig. S2A). Training sentences are left-right flipped with probability
``flip.probability`` (text and paired region labels), but only where the flip changes the text or the
labels are side-symmetric; the others are counted in ``data_summary.json`` (``flip``).

``language`` picks the preset of :mod:`datamodules.crossdl.sentences.languages` (Findings and end
headers, sentence splitting, side words); explicit ``findings_headers`` / ``end_headers`` /
``flip.word_map`` win. A run whose sentences name no configured side word, or whose reports have no
configured Findings header, stops with :class:`LanguageMismatchError`.

Test sets: ``sentence`` (sentence-level labels) and ``report`` (the test reports' Findings
sentences, scored against their gold matrices after the max-merge of ``A = max_s r_s t_s^T``), and
one per hold-out (``holdouts``: ``{name: reports table with gold matrices}``, e.g. the paper's
prospective set, Fig. S2H), scored as ``report``; every sentence and report of a hold-out patient
leaves the development data, by default after the split is drawn (``data.split.holdout_order=split_first``,
:class:`reportsup.contracts.splits.SplitProtocol`: a hold-out added later moves no other patient).
"""

from __future__ import annotations

import dataclasses
import json
import random
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

from datamodules.common.report_sections import MissingFindingsError, findings_sentences
from datamodules.common.reports import ReportDataset, TokenizedLoaders
from datamodules.common.tables import ReportTableError, read_report_table
from datamodules.crossdl.sentences.languages import check_language, language_preset
from datamodules.crossdl.sentences.text_flip import LeftRightFlip
from reportsup.contracts.labels.crossdl import LabelSpace
from reportsup.contracts.run_dir import REPORTS_WITHOUT_FINDINGS
from reportsup.contracts.splits import RunSplit, SplitError, SplitProtocol

SENTENCE_COLUMNS = ("sentence_id", "report_id", "patient_id", "text")


class FlipAugmentedDataset(Dataset):
    """Training sentences, each left-right flipped with probability ``p`` when drawn, if it can be:
    :meth:`LeftRightFlip.can_flip` (the text names a side, or the labels are side-symmetric). A sentence
    labelled with a side its text does not name keeps its text and labels."""

    def __init__(self, base: ReportDataset, flip: LeftRightFlip, p: float, n_regions: int) -> None:
        self.base, self.flip, self.p, self.n_regions = base, flip, p, n_regions
        regions = base.targets[:, :n_regions].numpy()
        self.flippable = np.array(
            [flip.can_flip(text, r) for text, r in zip(base.texts, regions, strict=True)], dtype=bool
        )

    def __len__(self) -> int:
        return len(self.base)

    def flip_counts(self) -> dict[str, int]:
        """For ``data_summary.json``: training sentences the flip may change, and those it always skips
        (text names no side word, lateral labels)."""
        return {"flippable": int(self.flippable.sum()), "skipped": int((~self.flippable).sum())}

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        # random.random() is drawn for every item, flippable or not, so the skip changes no other draw;
        # it is seeded per worker by seed_everything(workers=True).
        if self.p > 0 and random.random() < self.p and self.flippable[i]:
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
        findings_headers: Sequence[str] | None = None,
        end_headers: Sequence[str] | None = None,
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
        self.language = str(language)
        # None: the language preset's value (an unknown language is refused only when a value is missing)
        flip = dict(flip or {})
        self.findings_headers = list(findings_headers or language_preset(self.language).findings_headers)
        self.end_headers = list(end_headers or language_preset(self.language).end_headers)
        word_map = flip.get("word_map") or language_preset(self.language).side_words
        self.split_cfg = dict(split or {})
        # Split first: scoring a trained discretizer on a new hold-out set moves no other patient.
        self.protocol = SplitProtocol.from_config(self.split_cfg, holdout_order="split_first")
        self.max_train_sentences = max_train_sentences
        self.flip_probability = float(flip.get("probability", 0.5))
        self.flip = LeftRightFlip(self.space, word_map)
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
        check_language(
            sentences["text"].tolist(),
            reports["text"].tolist() if reports is not None else None,
            self.flip,
            self.findings_headers,
            language=self.language,
            source=f"{self.sentences_path}" + (f" / {self.reports_path}" if reports is not None else ""),
        )
        holdouts = {
            name: read_report_table(path, matrix_cols, path_key=f"data.holdouts.{name}")
            for name, path in self.holdout_paths.items()
        }
        n_sentences = len(sentences)
        run_split = self._draw_split(sentences, reports, holdouts)
        is_sentence = np.arange(len(run_split.split)) < n_sentences
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
        flip_counts = self.datasets["train"].flip_counts()
        if flip_counts["skipped"] and self.flip_probability > 0:
            rank_zero_info(
                f"[reportsup] left-right flip: {flip_counts['skipped']} of {len(train)} training sentences "
                "name no side word but have lateral labels; they are never flipped (data_summary.json: flip)."
            )
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
            "language": self.language,
            "split_unit": self.protocol.unit,
            "flip_probability": self.flip_probability,
            "flip": flip_counts,
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

    def _region_type_labels(self, reports: pd.DataFrame) -> pd.DataFrame:
        """The sentence label space (regions, then types) of each report, from its gold matrix columns."""
        out = pd.DataFrame(np.nan, index=range(len(reports)), columns=self.labels)
        cells = self.space.matrix_columns()
        if not set(cells) <= set(reports.columns):
            return out
        matrix = reports[cells].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        matrix = matrix.reshape(len(reports), len(self.space.regions), len(self.space.types))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-unknown report: NaN, as it should
            out[list(self.space.regions)] = np.nanmax(matrix, axis=2)
            out[list(self.space.types)] = np.nanmax(matrix, axis=1)
        return out

    def _draw_split(
        self, sentences: pd.DataFrame, reports: pd.DataFrame | None, holdouts: dict[str, pd.DataFrame]
    ) -> RunSplit:
        """The split of the sentence rows, then of the report rows (in that order)."""
        held = {name: table.assign(id=table["report_id"]) for name, table in holdouts.items()}
        sentence_rows = sentences.assign(id=sentences["sentence_id"])[["id", "patient_id"]]
        report_rows = (
            reports.assign(id=reports["report_id"])[["id", "patient_id"]] if reports is not None else None
        )
        # The labels of each row for data.split.stratify (a row's or patient's rarest positive label) and the
        # positives per split: a sentence's regions and types; a report's from its gold matrix (region r:
        # any r__t, type t: any r__t), NaN (no positives) when the reports table has no gold matrices.
        sentence_labels = sentences[self.labels].reset_index(drop=True)
        report_labels = self._region_type_labels(reports) if reports is not None else None
        if self.protocol.unit == "row":
            # The paper: sentences at random ("Datasets"); the reports scored against gold matrices stay
            # split by patient (a report is the unit of the report-level test set).
            parts = [
                self.protocol.assign(
                    sentence_rows,
                    held,
                    source=str(self.sentences_path),
                    what="sentences",
                    labels=sentence_labels,
                )
            ]
            if report_rows is not None:
                by_patient = dataclasses.replace(self.protocol, unit="patient")
                parts.append(
                    by_patient.assign(
                        report_rows,
                        held,
                        source=str(self.reports_path),
                        required=(),
                        what="reports",
                        labels=report_labels,
                    )
                )
            return RunSplit.concat(parts, str(self.sentences_path), "sentences")
        # One split over both tables, so no patient's sentences train the model scored on their reports.
        rows = pd.concat(
            [sentence_rows, *([report_rows] if report_rows is not None else [])], ignore_index=True
        )
        labels = pd.concat(
            [sentence_labels, *([report_labels] if report_labels is not None else [])], ignore_index=True
        )
        return self.protocol.assign(
            rows, held, source=str(self.sentences_path), required=(), what="sentences", labels=labels
        )

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
