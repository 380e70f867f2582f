"""ReportDataModule: report tables -> patient-level splits -> tokenised, dynamically padded batches.

Follows Wood et al. 2021 (Fig. 1, "Modelling"): each hold-out set (image-label test set, external
site) has all its patients removed from the development data before a patient-level 60/20/20
split (``data.split.holdout_order=exclude_first``, the split protocol of
:mod:`reportsup.contracts.splits`); the internal test split is the "report label" test set and every
hold-out is evaluated as its own test set (``test/<set>/...``).

Unknown labels (empty cells) follow ``unknown_policy``:

* ``mask`` (default): excluded from the loss; rows with no known label at all are excluded from
  this model's data (counted in ``data_summary.json``, never silently);
* ``zeros`` / ``ones``: treated as negative / positive in training;
* ``soft``: the probability in ``<label><soft_label_suffix>`` (labels from another model).

Test metrics are always computed on known labels only: a filled-in label is not a reference label.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.common.tables import ReportTableError, check_text_column, read_report_table, read_table_file
from reportsup.contracts.splits import (
    SPLIT_NAMES,
    UNUSED,
    RunSplit,
    SplitError,
    SplitProtocol,
    check_learnable,
)

UNKNOWN_POLICIES = ("mask", "zeros", "ones", "soft")
INTERNAL_TEST_SET = "report_label"

Tokenize = Callable[[Sequence[str]], Mapping[str, torch.Tensor]]


class ReportDataset(Dataset):
    """Rows of a reports table as ``{"index", "text", "targets"}``; targets hold NaN where unknown."""

    def __init__(self, table: pd.DataFrame, targets: np.ndarray) -> None:
        self.table = table.reset_index(drop=True)
        self.targets = torch.tensor(targets, dtype=torch.float32)
        self.texts = self.table["text"].tolist()

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"index": i, "text": self.texts[i], "targets": self.targets[i]}


class LengthSortedSampler(Sampler[int]):
    """Longest report first, so evaluation batches hold reports of similar length and pad little.
    Character length is the proxy: it needs no tokenisation and orders reports almost as tokens do."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.order = np.argsort([-len(t) for t in texts], kind="stable").tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class ReportCollator:
    """Tokenises a batch with dynamic padding (to the longest report in the batch)."""

    def __init__(self, tokenize: Tokenize) -> None:
        self.tokenize = tokenize

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(self.tokenize([it["text"] for it in items]))
        batch["targets"] = torch.stack([it["targets"] for it in items])
        batch["index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
        return batch


class TokenizedLoaders:
    """DataLoaders shared by the report DataModules: shuffled training batches, length-sorted
    evaluation batches, dynamic padding by the encoder's tokenizer. Needs ``datasets``, ``test_table``,
    ``test_set_names``, ``batch_size``, ``eval_batch_size`` and ``num_workers``."""

    tokenize: Tokenize | None = None

    def set_tokenizer(self, tokenize: Tokenize) -> None:
        self.tokenize = tokenize

    def _loader(self, name: str, train: bool) -> DataLoader:
        if self.tokenize is None:
            raise RuntimeError("set_tokenizer(encoder.tokenize) must be called before loading batches.")
        return DataLoader(
            self.datasets[name],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            sampler=None if train else LengthSortedSampler(self.test_table(name)["text"].tolist()),
            num_workers=self.num_workers,
            collate_fn=ReportCollator(self.tokenize),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(name, train=False) for name in self.test_set_names]


class ReportDataModule(TokenizedLoaders, pl.LightningDataModule):
    """Reports table (CSV/Parquet/JSONL) with labels ``labels`` -> train/val/test + hold-out test sets.

    Args:
        path: development reports table.
        labels: label columns to learn, e.g. ``["abnormal"]`` or ``["mass"]``.
        holdouts: ``{test set name: table path}``; their patients leave the development data.
        unknown_policy: one of ``mask``, ``zeros``, ``ones``, ``soft`` (module docstring).
        split: ``seed``, ``fractions`` (train, val, test), optional ``n_folds``/``fold`` for
            patient-level k-fold, or ``file`` for a fixed split (``id``, ``split``); ``holdout_order``
            (default ``exclude_first``, the paper): :class:`~reportsup.contracts.splits.SplitProtocol`.
        output_dir: where ``splits.csv`` and ``data_summary.json`` are written (the run directory).
        unlabelled_path: reports without reference labels (column ``text``) for unsupervised
            pre-training, e.g. the word2vec baseline (Wood et al.: "the remaining 121,556 reports").
    """

    def __init__(
        self,
        path: str | None,
        labels: Sequence[str],
        holdouts: Mapping[str, str] | None = None,
        unknown_policy: str = "mask",
        soft_label_suffix: str = "_prob",
        split: Mapping[str, Any] | None = None,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        output_dir: str | None = None,
        unlabelled_path: str | None = None,
    ) -> None:
        super().__init__()
        if not path:
            raise ReportTableError(
                "data.path is not set: point it at your reports table "
                "(data.path=/path/reports.csv) or run with demo=true."
            )
        if not labels:
            raise ReportTableError(
                "data.labels is empty: name the label column(s) to learn, e.g. data.labels=[abnormal]."
            )
        if unknown_policy not in UNKNOWN_POLICIES:
            raise ReportTableError(
                f"data.unknown_policy={unknown_policy!r}: choose one of {UNKNOWN_POLICIES}."
            )
        self.path = path
        self.labels = list(labels)
        unset = [name for name, p in (holdouts or {}).items() if not p]
        if unset:
            rank_zero_info(
                f"[reportsup] hold-out(s) {unset} have no path (data.holdouts.<name>=...): not evaluated."
            )
        self.holdout_paths = {name: str(p) for name, p in (holdouts or {}).items() if p}
        if INTERNAL_TEST_SET in self.holdout_paths:
            raise SplitError(
                f"data.holdouts: '{INTERNAL_TEST_SET}' names the internal test split; rename the hold-out."
            )
        self.unknown_policy = unknown_policy
        self.soft_label_suffix = soft_label_suffix
        self.split_cfg = dict(split or {})
        # Wood et al. Fig. 1: hold-out patients leave before the split is drawn.
        self.protocol = SplitProtocol.from_config(self.split_cfg, holdout_order="exclude_first")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.output_dir = Path(output_dir) if output_dir else None
        self.unlabelled_path = unlabelled_path
        self.datasets: dict[str, ReportDataset] = {}
        self.summary: dict[str, Any] = {}

    # -- data preparation -------------------------------------------------------------------
    def _training_targets(self, table: pd.DataFrame) -> np.ndarray:
        y = table[self.labels].to_numpy(dtype=np.float64)
        if self.unknown_policy == "zeros":
            y = np.where(np.isnan(y), 0.0, y)
        elif self.unknown_policy == "ones":
            y = np.where(np.isnan(y), 1.0, y)
        elif self.unknown_policy == "soft":
            soft = table[[f"{lb}{self.soft_label_suffix}" for lb in self.labels]].to_numpy(dtype=np.float64)
            y = np.where(np.isnan(y), soft, y)
        return y

    def _read_holdout(self, name: str, path: str) -> pd.DataFrame:
        table = read_report_table(path, labels=[])
        present = [lb for lb in self.labels if lb in table.columns]
        if not present:
            raise ReportTableError(
                f"{path}: hold-out '{name}' has none of the label columns {self.labels}; "
                f"found {list(table.columns)}."
            )
        table = read_report_table(path, labels=present)
        for lb in self.labels:
            if lb not in present:
                rank_zero_info(
                    f"[reportsup] hold-out '{name}' has no column '{lb}': that label is not evaluated there."
                )
                table[lb] = np.nan
        return table

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        soft = self.soft_label_suffix if self.unknown_policy == "soft" else None
        table = read_report_table(self.path, self.labels, soft_label_suffix=soft)
        holdouts = {name: self._read_holdout(name, p) for name, p in self.holdout_paths.items()}
        n_read = len(table)
        targets = self._training_targets(table)
        no_label = np.isnan(targets).all(axis=1)
        run_split = self.protocol.assign(
            table.assign(id=table["report_id"], usable=~no_label),
            {name: ho.assign(id=ho["report_id"]) for name, ho in holdouts.items()},
            source=str(self.path),
            what="reports",
            # reference labels (NaN = unknown): the strata of data.split.stratify and the positives per split
            labels=table[self.labels],
        )
        n_unused = int(run_split.mask(UNUSED).sum())  # rows of hold-out patients are counted there
        if n_unused:
            rank_zero_info(
                f"[reportsup] {n_unused} of {n_unused + int(run_split.split.isin(SPLIT_NAMES).sum())} reports "
                f"have no known value for {self.labels} and are left out of this model's data "
                f"(data.unknown_policy={self.unknown_policy})."
            )
        check_learnable(targets[run_split.mask("train")], self.labels, self.path)
        for name in SPLIT_NAMES:
            mask = run_split.mask(name)
            part = table.loc[mask]
            # Test sets are scored on reference labels only; train/val use the unknown policy.
            y = part[self.labels].to_numpy(dtype=np.float64) if name == "test" else targets[mask]
            self.datasets[INTERNAL_TEST_SET if name == "test" else name] = ReportDataset(part, y)
        for name, ho in holdouts.items():
            self.datasets[name] = ReportDataset(ho, ho[self.labels].to_numpy(dtype=np.float64))
        self.summary = {
            "path": str(self.path),
            "labels": self.labels,
            "unknown_policy": self.unknown_policy,
            "reports_read": n_read,
            "removed_for_holdout_patients": run_split.removed(),
            "removed_without_known_label": n_unused,
            "sizes": {k: len(v) for k, v in self.datasets.items()},
            "positives": {
                k: {lb: int(np.nansum(v.targets[:, j].numpy() == 1)) for j, lb in enumerate(self.labels)}
                for k, v in self.datasets.items()
            },
        }
        rank_zero_info(
            f"[reportsup] data: {json.dumps(self.summary['sizes'])}, unknown_policy={self.unknown_policy}"
        )
        self._write_outputs(run_split)

    def _write_outputs(self, run_split: RunSplit) -> None:
        if self.output_dir is None or (self.trainer is not None and not self.trainer.is_global_zero):
            return
        # splits.csv (or on resume: checked against the split this run trained on) and data_summary.json
        run_split.save(self.output_dir, data_summary=self.summary)

    # -- accessors ---------------------------------------------------------------------------
    @property
    def train_texts(self) -> list[str]:
        """Texts of the training split (tokenisers trained on data may only see these)."""
        self.setup()
        return self.datasets["train"].texts

    @property
    def unlabelled_texts(self) -> list[str]:
        """Texts of ``unlabelled_path`` (empty without one). Rows whose ``report_id`` belongs to a test set
        are removed (and counted): pre-training must not see the reports it is tested on."""
        if not self.unlabelled_path:
            return []
        self.setup()
        path = Path(self.unlabelled_path)
        if not path.is_file():
            raise ReportTableError(f"data.unlabelled_path={path}: file not found.")
        table = read_table_file(path)
        if "text" not in table.columns:
            raise ReportTableError(
                f"{path}: no 'text' column (columns: {list(table.columns)}). The unlabelled reports need one."
            )
        if "report_id" in table.columns:
            tested = set().union(*(self.test_table(n)["report_id"].astype(str) for n in self.test_set_names))
            in_test = table["report_id"].astype(str).isin(tested)
            if in_test.any():
                rank_zero_info(
                    f"[reportsup] {int(in_test.sum())} reports of {path} belong to a test set and are left "
                    "out of the unlabelled corpus."
                )
            table = table.loc[~in_test].reset_index(drop=True)
        else:
            table = table.assign(report_id=[f"row {i + 1}" for i in range(len(table))])
        check_text_column(table, path)
        return table["text"].astype(str).tolist()

    @property
    def test_set_names(self) -> list[str]:
        return [INTERNAL_TEST_SET, *self.holdout_paths]

    def test_table(self, name: str) -> pd.DataFrame:
        return self.datasets[name].table
