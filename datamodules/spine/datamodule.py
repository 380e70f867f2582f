"""SpineXrayDataModule: coronal + sagittal lumbar radiographs of a session, fused into one RGB image,
with machine labels (report NLP) or human labels (spine study, "Automated Diagnosis From Radiographic
Images", Figure 1).

Inputs:

* ``views``: one row per image: ``session_id``, ``patient_id``, ``view`` (coronal | sagittal),
  ``image`` (DICOM, PNG, JPEG or TIFF; relative paths are relative to the table), ``report_id``.
* ``machine_labels``: ``reportsup-label`` output folder(s) of the report NLP (or tables with
  ``report_id`` and one 0/1 column per finding), joined on ``report_id``. Several folders (the paper's
  one model per finding) are merged; each finding must come from exactly one of them.
* ``test_labels`` / ``refinement_labels``: human image labels (``session_id`` + findings): the paper's
  204-couple test set and 481-couple refinement set (a random part of the training pool).
* ``nlp_reports``: the reports annotated for NLP development; their sessions are excluded from image
  training and testing ("only machine-generated data was employed in this stage").

Splits (:class:`reportsup.contracts.splits.SplitProtocol`, the one protocol of every DataModule):
every session of a test patient leaves the training pool, before the split is drawn (the paper's
training pool; ``data.split.holdout_order=exclude_first``); ``train_on=machine`` (1step) trains on the
pool's machine labels, ``train_on=refinement`` (2steps, step2only) on the refinement set's human
labels; a patient-level ``val_fraction`` of the training sessions is held out for checkpoint selection
and early stopping (the paper does not say how it chose the epoch). ``splits.csv`` lists the training
sessions (train/val) and the test sessions (``image_test``); a resumed or test-only run is checked
against it. Test sets: ``image_test`` and, for the Youden cut-offs, ``refinement``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from datamodules.common.tables import ReportTableError, read_table_file, require_rows
from datamodules.spine.radiographs import (
    GREEN_CHANNEL,
    RadiographReadError,
    check_radiograph,
    fuse_views,
    read_radiograph,
    resize_view,
)
from reportsup.contracts.label_folder import read_label_folder
from reportsup.contracts.labels.spine import VIEWS, check_findings
from reportsup.contracts.splits import RunSplit, SplitError, SplitProtocol, check_learnable

TRAIN_ON = ("machine", "refinement")
CHECK_IMAGES = ("decode", "header")
TEST_SET = "image_test"
REFINEMENT_SET = "refinement"
#: ImageNet statistics: the ResNet-18 starts from ImageNet weights
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SpineDataError(ReportTableError):
    """Bad spine input (views table, label tables, images); the message names the file, row or session."""


def _listing(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def _read(path: str | Path, what: str, required: Sequence[str]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise SpineDataError(f"{what}={path}: file not found.")
    # a header-only table is named, not counted as "0 sessions"
    table = require_rows(read_table_file(path), path, what, SpineDataError)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise SpineDataError(f"{path}: missing column(s) {missing} ({what}); found {list(table.columns)}.")
    for c in required:
        table[c] = table[c].astype(str).str.strip()
    return table


def pair_views(views: pd.DataFrame, source: Path) -> pd.DataFrame:
    """One row per session with ``coronal`` and ``sagittal`` image paths and their views-table rows
    (``coronal_row``, ``sagittal_row``); every problem is listed with its row numbers (header = row 1): an
    unknown view name, a missing view, more than two views, one file given as both views, or a session
    whose rows disagree on the patient. The image files themselves are checked by
    :func:`check_session_images`."""
    problems = []
    views = views.assign(row=np.arange(len(views)) + 2, view=views["view"].str.lower())
    bad_view = views.loc[~views["view"].isin(VIEWS)]
    if len(bad_view):
        problems.append(
            f"view must be one of {list(VIEWS)}: rows {_listing(bad_view['row'].tolist())} "
            f"have {sorted(bad_view['view'].unique().tolist())[:5]}"
        )
    rows = []
    for sid, group in views.groupby("session_id", sort=False):
        where = f"session {sid} (rows {_listing(group['row'].tolist())})"
        if len(group) > 2:
            problems.append(
                f"{where} has {len(group)} images: a session is one coronal and one sagittal radiograph "
                "(remove extra views such as flexion-extension, or give them their own session_id)"
            )
            continue
        missing = [v for v in VIEWS if v not in set(group["view"])]
        if missing:
            problems.append(f"{where} has no {' and no '.join(missing)} view")
            continue
        if group["patient_id"].nunique() > 1:
            problems.append(f"{where} names several patients {group['patient_id'].unique().tolist()}")
            continue
        by_view = group.set_index("view")
        if str(by_view.loc["coronal", "image"]) == str(by_view.loc["sagittal", "image"]):
            problems.append(f"{where} gives the same file as its coronal and its sagittal view")
            continue
        record = {
            "session_id": sid,
            "patient_id": group["patient_id"].iloc[0],
            "coronal": str(by_view.loc["coronal", "image"]),
            "sagittal": str(by_view.loc["sagittal", "image"]),
            # views-table rows (header = row 1), so an image problem found later names its row
            "coronal_row": int(by_view.loc["coronal", "row"]),
            "sagittal_row": int(by_view.loc["sagittal", "row"]),
        }
        if "report_id" in group.columns:
            record["report_id"] = str(group["report_id"].iloc[0])
        rows.append(record)
    if problems:
        raise SpineDataError(
            f"{source}: " + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else "")
        )
    sessions = pd.DataFrame(rows)
    for view in VIEWS:  # relative paths are relative to the views table
        sessions[view] = [str(p if Path(p).is_absolute() else source.parent / p) for p in sessions[view]]
    return sessions


def check_session_images(
    sessions: pd.DataFrame, source: str | Path, decode: bool = True, workers: int | None = None
) -> None:
    """Every view image of ``sessions`` (:func:`pair_views`' table) checked with
    :func:`~datamodules.spine.radiographs.check_radiograph` before anything trains or predicts (issue 21,
    items 3 and 5): one :class:`SpineDataError` lists each unusable file with its views-table row, session,
    view, the problem and the fix. No session is dropped quietly: the views table is the user's list of
    what to train on, as :func:`pair_views` refuses a table with a bad row rather than skipping it.

    ``decode`` reads the pixels as training does (finds damaged compressed streams and blank exports); without
    it only headers and PNG chunk checksums are read. Files are checked on ``workers`` threads (PIL and
    pydicom's decoders release the GIL while they inflate)."""
    jobs = [
        (
            int(row[f"{view}_row"]) if f"{view}_row" in sessions.columns else None,
            str(row["session_id"]),
            view,
            row[view],
        )
        for _, row in sessions.iterrows()
        for view in VIEWS
    ]
    if not jobs:
        return
    workers = workers or min(8, os.cpu_count() or 1)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(pool.map(lambda job: check_radiograph(job[3], decode=decode), jobs))
    rank_zero_info(
        f"[reportsup] spine views: {len(jobs)} images checked ({'decoded' if decode else 'headers'}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    bad = [(job, problem) for job, problem in zip(jobs, found, strict=True) if problem is not None]
    if not bad:
        return
    lines = [
        f"{'row ' + str(row) + ' ' if row is not None else ''}(session {sid}, {view} view) {path}: {problem}"
        for (row, sid, view, path), problem in bad
    ]
    shown = lines[:20] + ([f"... and {len(lines) - 20} more"] if len(lines) > 20 else [])
    raise SpineDataError(
        f"{source}: {len(bad)} of {len(jobs)} view images cannot be used (checked before training or prediction):\n  "
        + "\n  ".join(shown)
        + "\nFix or replace each file, or remove its session's rows from the views table."
    )


def read_finding_labels(path: str | Path, key: str, findings: Sequence[str], what: str) -> pd.DataFrame:
    """A human label table (``key`` + finding columns, 0/1 or blank = unknown) indexed by ``key``."""
    table = _read(path, what, [key])
    missing = [f for f in findings if f not in table.columns]
    if missing:
        raise SpineDataError(
            f"{path}: no column for finding(s) {missing} ({what}); found {list(table.columns)}."
        )
    dup = table[key][table[key].duplicated()].tolist()
    if dup:
        raise SpineDataError(f"{path}: {key} repeated: {_listing(dup)} ({what}); one row per {key}.")
    values = {}
    for f in findings:
        raw = table[f]
        blank = raw.isna() | (raw.astype(str).str.strip() == "")
        number = pd.to_numeric(raw.where(~blank), errors="coerce")
        bad = np.flatnonzero((~blank & ~number.isin([0, 1])).to_numpy())
        if len(bad):
            raise SpineDataError(
                f"{path}: row {bad[0] + 2}, column '{f}' is {raw.iloc[bad[0]]!r}; labels are 0, 1 or blank ({what})."
            )
        values[f] = number.to_numpy(dtype=float)
    return pd.DataFrame(values, index=table[key])


def read_machine_labels(
    paths: str | Sequence[str], findings: Sequence[str]
) -> tuple[pd.DataFrame, list[dict]]:
    """Machine labels by ``report_id`` from ``reportsup-label`` folders or tables, and each source's
    provenance (the labeller's checkpoint and SHA-256 from its manifest)."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    frames, provenance, owner = [], [], {}
    for p in map(Path, paths):
        if p.is_dir():
            try:  # the labelling-folder contract's one reader: parts/ in input order, and the manifest
                table, manifest = read_label_folder(p)
            except (
                FileNotFoundError,
                FileExistsError,
            ) as err:  # no part yet; the earlier layout (with its mv)
                raise SpineDataError(f"data.machine_labels={p}: {err}") from None
            provenance.append(
                {
                    "path": str(p),
                    "checkpoint": manifest.get("checkpoint"),
                    "checkpoint_sha256": manifest.get("checkpoint_sha256"),
                }
            )
        else:
            table = _read(p, "data.machine_labels", ["report_id"])
            provenance.append({"path": str(p)})
        if "report_id" not in table.columns:
            raise SpineDataError(f"{p}: no report_id column (data.machine_labels).")
        table["report_id"] = table["report_id"].astype(str)
        mine = [f for f in findings if f in table.columns]
        for f in mine:
            if f in owner:
                raise SpineDataError(
                    f"data.machine_labels: finding '{f}' is in both {owner[f]} and {p}; give each finding once."
                )
            owner[f] = p
        frames.append(table.drop_duplicates("report_id").set_index("report_id")[mine].astype(float))
    missing = [f for f in findings if f not in owner]
    if missing:
        raise SpineDataError(
            f"data.machine_labels {[str(p) for p in paths]}: no labels for finding(s) {missing}."
        )
    return pd.concat(frames, axis=1, join="outer"), provenance


class ViewAugmentation:
    """The paper's random augmentation (imgaug there; torchvision v2 here), on the two views before
    fusion so the G channel keeps its content: left-right flip, and per view Gaussian blur, contrast
    change and Gaussian noise.

    ``flip_views``: ``both`` flips the fused image as the paper's augmentation does, which mirrors the
    sagittal view front to back (an anterolisthesis then looks like a retrolisthesis while its label
    stays); ``coronal`` flips only the coronal view, a true left-right mirror that keeps every label valid.
    """

    def __init__(
        self,
        flip_probability: float = 0.5,
        flip_views: str = "both",
        blur_probability: float = 0.3,
        blur_sigma: Sequence[float] = (0.1, 1.5),
        contrast_probability: float = 0.3,
        contrast: Sequence[float] = (0.75, 1.25),
        noise_sigma: float = 0.02,
    ) -> None:
        if flip_views not in ("both", "coronal"):
            raise ValueError(f"data.augment.flip_views={flip_views!r}: both (paper) or coronal.")
        self.flip_probability, self.flip_views = flip_probability, flip_views
        self.per_view = v2.Compose(
            [
                v2.RandomApply([v2.GaussianBlur(kernel_size=7, sigma=tuple(blur_sigma))], p=blur_probability),
                v2.RandomApply([v2.ColorJitter(contrast=tuple(contrast))], p=contrast_probability),
                v2.GaussianNoise(mean=0.0, sigma=noise_sigma, clip=True),
            ]
        )

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) < self.flip_probability:  # (2, H, W): coronal, sagittal
            flipped = views.flip(-1)
            views = flipped if self.flip_views == "both" else torch.stack([flipped[0], views[1]])
        return torch.cat([self.per_view(views[i : i + 1]) for i in range(views.shape[0])])


class FusedViewsDataset(Dataset):
    """Sessions as ``{"index", "image" (3, H, W) ImageNet-normalised, "targets"}``."""

    def __init__(
        self,
        table: pd.DataFrame,
        targets: np.ndarray,
        image_size: Sequence[int],
        green_channel: str,
        augment: ViewAugmentation | None = None,
    ) -> None:
        self.table = table.reset_index(drop=True)
        self.targets = torch.tensor(targets, dtype=torch.float32)
        self.image_size = tuple(int(s) for s in image_size)
        self.green_channel = green_channel
        self.augment = augment
        self.normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def __len__(self) -> int:
        return len(self.table)

    def views(self, i: int) -> torch.Tensor:
        """``(2, H, W)``: the coronal and sagittal view of session ``i`` in [0, 1], resized."""
        row = self.table.iloc[i]
        out = []
        for view in ("coronal", "sagittal"):
            try:
                out.append(resize_view(read_radiograph(row[view]), self.image_size))
            except RadiographReadError as err:
                # checked before the first epoch; a file changed on disk since then still names its row
                where = f"views-table row {row[view + '_row']}, " if f"{view}_row" in row.index else ""
                raise SpineDataError(f"{where}session {row['session_id']} ({view} view): {err}") from None
        return torch.cat(out)

    def fused(self, i: int, augment: bool = False) -> torch.Tensor:
        """The un-normalised fused image ``(3, H, W)`` in [0, 1] (for display and occlusion overlays)."""
        views = self.views(i)
        if augment and self.augment is not None:
            views = self.augment(views)
        return fuse_views(views[0], views[1], self.green_channel)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.normalize(self.fused(i, augment=True))
        return {"index": i, "image": image, "targets": self.targets[i]}


class SpineXrayDataModule(pl.LightningDataModule):
    """Fused lumbar radiographs with machine or human labels (module docstring).

    Args:
        views: the views table (one row per image).
        labels: findings to learn (``reportsup.contracts.labels.spine.FINDINGS``), in output order.
        train_on: ``machine`` (1step) or ``refinement`` (2steps, step2only).
        machine_labels: ``reportsup-label`` folder(s) or table(s); needed for ``train_on=machine``.
        test_labels: human image labels of the test sessions.
        refinement_labels: human image labels of the refinement sessions (part of the training pool).
        nlp_reports: the NLP development reports (``report_id``); their sessions are left out.
        image_size: ``[H, W]`` of each view after resizing (paper: 512 x 512).
        green_channel: G channel content, one of ``zeros`` (paper), ``mean``, ``coronal``, ``sagittal``.
        augment: :class:`ViewAugmentation` arguments, or ``None`` for no augmentation.
        split: ``seed`` and ``val_fraction`` (patients of the training sessions held out for validation),
            or ``file`` (a fixed split of the training sessions); ``holdout_order`` must be
            ``exclude_first`` (:meth:`split_protocol`).
        missing_labels: ``error`` (default) or ``drop``: training sessions whose report has no machine
            label (dropped ones are counted in ``data_summary.json``).
        check_images: how every view image of the sessions used is checked in ``setup``, before the
            first epoch (:func:`check_session_images`): ``decode`` (default) reads the pixels as training
            does; ``header`` reads only headers and PNG chunk checksums, for archives where one full read
            costs too much (a damaged compressed stream is then found when training reads it).
    """

    id_column = "session_id"

    def __init__(
        self,
        views: str | None,
        labels: Sequence[str],
        train_on: str = "machine",
        machine_labels: str | Sequence[str] | None = None,
        test_labels: str | None = None,
        refinement_labels: str | None = None,
        nlp_reports: str | None = None,
        image_size: Sequence[int] = (512, 512),
        green_channel: str = "zeros",
        augment: Mapping[str, Any] | None = None,
        split: Mapping[str, Any] | None = None,
        missing_labels: str = "error",
        check_images: str = "decode",
        batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        output_dir: str | None = None,
    ) -> None:
        super().__init__()
        if not views:
            raise SpineDataError(
                "data.views is not set: point it at your views table (session_id, patient_id, view, image, report_id), or run with demo=true."
            )
        if not labels:
            raise SpineDataError(
                "data.labels is empty: name the finding(s) to learn, e.g. data.labels=[scoliosis]."
            )
        try:
            check_findings(list(labels), "data.labels")
        except ValueError as err:
            raise SpineDataError(str(err)) from None
        if train_on not in TRAIN_ON:
            raise SpineDataError(f"data.train_on={train_on!r}: choose one of {TRAIN_ON}.")
        if train_on == "machine" and not machine_labels:
            raise SpineDataError(
                "data.train_on=machine needs data.machine_labels (reportsup-label output of the report NLP)."
            )
        if train_on == "refinement" and not refinement_labels:
            raise SpineDataError(
                "data.train_on=refinement needs data.refinement_labels (human labels of the refinement sessions)."
            )
        if not test_labels:
            raise SpineDataError(
                "data.test_labels is not set: the human-annotated image test set (session_id + findings)."
            )
        if green_channel not in GREEN_CHANNEL:
            raise SpineDataError(f"data.green_channel={green_channel!r}: choose one of {GREEN_CHANNEL}.")
        if missing_labels not in ("error", "drop"):
            raise SpineDataError(f"data.missing_labels={missing_labels!r}: choose error or drop.")
        if check_images not in CHECK_IMAGES:
            raise SpineDataError(f"data.check_images={check_images!r}: choose one of {CHECK_IMAGES}.")
        self.check_images = check_images
        self.views_path = Path(views)
        self.labels = list(labels)
        self.train_on = train_on
        self.machine_labels = machine_labels
        self.test_labels = test_labels
        self.refinement_labels = refinement_labels
        self.nlp_reports = nlp_reports
        self.image_size = list(image_size)
        self.green_channel = green_channel
        self.augment = ViewAugmentation(**augment) if augment is not None else None
        self.split_cfg = dict(split or {})
        self.protocol = self.split_protocol(self.split_cfg)
        self.missing_labels = missing_labels
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.output_dir = Path(output_dir) if output_dir else None
        self.datasets: dict[str, FusedViewsDataset] = {}
        self.summary: dict[str, Any] = {}

    @staticmethod
    def split_protocol(split: Mapping[str, Any]) -> SplitProtocol:
        """``data.split`` of the spine images: train/val over the training pool's patients
        (``val_fraction`` of them validate), no drawn test split (the image test set is
        ``data.test_labels``), and the test patients leave the pool first (the paper's training pool)."""
        cfg = dict(split)
        val_fraction = float(cfg.pop("val_fraction", 0.1))
        drawn_test = [key for key in ("fractions", "n_folds") if cfg.get(key)]
        if drawn_test:
            raise SplitError(
                f"data.split.{drawn_test[0]}: the spine image test set is data.test_labels, not a drawn split; "
                "set data.split.val_fraction (the share of training patients that validate) instead."
            )
        if not 0 < val_fraction < 1:
            raise SplitError(f"data.split.val_fraction={val_fraction}: give a fraction between 0 and 1.")
        protocol = SplitProtocol.from_config(
            {**cfg, "fractions": (1 - val_fraction, val_fraction, 0.0)}, holdout_order="exclude_first"
        )
        if protocol.holdout_order != "exclude_first":
            raise SplitError(
                f"data.split.holdout_order={protocol.holdout_order}: the spine image DataModule supports only "
                "exclude_first: the paper's training pool is the sessions of patients outside the image test set."
            )
        return protocol

    # -- data preparation -------------------------------------------------------------------
    def _training_targets(
        self, pool: pd.DataFrame, refinement: pd.DataFrame | None
    ) -> tuple[pd.DataFrame, np.ndarray, dict]:
        info: dict[str, Any] = {}
        if self.train_on == "refinement":
            table = pool.loc[pool["session_id"].isin(refinement.index)].reset_index(drop=True)
            return (
                table,
                refinement.loc[table["session_id"], self.labels].to_numpy(),
                {"label_source": "human (refinement set)"},
            )
        machine, provenance = read_machine_labels(self.machine_labels, self.labels)
        info["label_source"] = "machine (report NLP)"
        info["machine_labels"] = provenance
        if "report_id" not in pool.columns:
            raise SpineDataError(f"{self.views_path}: no report_id column; machine labels are joined on it.")
        has = pool["report_id"].isin(machine.index)
        if not has.all():
            missing = pool.loc[~has, "report_id"].tolist()
            if self.missing_labels == "error":
                raise SpineDataError(
                    f"{len(missing)} training session(s) have no machine label for their report: {_listing(missing)}. "
                    "Run reportsup-label on their reports, or set data.missing_labels=drop."
                )
            rank_zero_info(
                f"[reportsup] {len(missing)} training sessions without a machine label are left out (data.missing_labels=drop)."
            )
            info["dropped_without_machine_label"] = len(missing)
        table = pool.loc[has].reset_index(drop=True)
        return table, machine.loc[table["report_id"], self.labels].to_numpy(), info

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        sessions = pair_views(
            _read(self.views_path, "data.views", ["session_id", "patient_id", "view", "image"]),
            self.views_path,
        )
        test = read_finding_labels(self.test_labels, "session_id", self.labels, "data.test_labels")
        refinement = (
            read_finding_labels(self.refinement_labels, "session_id", self.labels, "data.refinement_labels")
            if self.refinement_labels
            else None
        )
        for name, lab in ((TEST_SET, test), (REFINEMENT_SET, refinement)):
            if lab is not None and not lab.index.isin(sessions["session_id"]).all():
                unknown = lab.index[~lab.index.isin(sessions["session_id"])].tolist()
                raise SpineDataError(
                    f"{name} labels name session(s) not in {self.views_path}: {_listing(unknown)}."
                )
        # The paper's exclusion: reports annotated for the NLP and their images stay out of this stage.
        nlp_ids: set[str] = set()
        if not self.nlp_reports:
            rank_zero_info(
                "[reportsup] data.nlp_reports is not set: no session is left out as an NLP development report. "
                "The paper keeps the reports annotated for the report NLP out of image training and testing: "
                "set data.nlp_reports=<their table> unless none of these sessions were annotated."
            )
        else:
            nlp_ids = set(_read(self.nlp_reports, "data.nlp_reports", ["report_id"])["report_id"])
            if "report_id" not in sessions.columns:
                raise SpineDataError(
                    f"{self.views_path}: no report_id column to exclude the NLP development reports."
                )
        in_nlp = sessions["report_id"].isin(nlp_ids) if nlp_ids else pd.Series(False, index=sessions.index)
        test_nlp = sessions.loc[in_nlp & sessions["session_id"].isin(test.index), "session_id"].tolist()
        if test_nlp:
            raise SpineDataError(
                f"test session(s) {_listing(test_nlp)} have reports in data.nlp_reports: the image test set must not "
                "contain NLP development reports (paper). Remove them from data.test_labels."
            )
        test_patients = set(sessions.loc[sessions["session_id"].isin(test.index), "patient_id"])
        pool = sessions.loc[~in_nlp & ~sessions["patient_id"].isin(test_patients)].reset_index(drop=True)
        if refinement is not None:
            outside = refinement.index[~refinement.index.isin(pool["session_id"])].tolist()
            if outside:
                raise SpineDataError(
                    f"refinement session(s) {_listing(outside)} are not in the training pool (a test patient's or an "
                    "NLP development session): the refinement set is drawn from the training images."
                )
        train_table, train_targets, label_info = self._training_targets(pool, refinement)
        test_table = sessions.loc[sessions["session_id"].isin(test.index)].reset_index(drop=True)
        # The test patients have already left the pool (above: the pool decides which sessions need
        # machine labels); the protocol draws train/val over it and lists the test sessions.
        run_split = self.protocol.assign(
            train_table.assign(id=train_table["session_id"]),
            {TEST_SET: test_table.assign(id=test_table["session_id"])},
            source=str(self.views_path),
            required=("train", "val"),
            what="training sessions",
            # the labels it trains on (machine or refinement): the strata of data.split.stratify
            labels=pd.DataFrame(train_targets, columns=self.labels),
        )
        label_source = self.refinement_labels if self.train_on == "refinement" else self.machine_labels
        check_learnable(
            train_targets[run_split.mask("train")], self.labels, str(label_source), what="session"
        )
        for name in ("train", "val"):
            mask = run_split.mask(name)
            self.datasets[name] = FusedViewsDataset(
                train_table.loc[mask],
                train_targets[mask],
                self.image_size,
                self.green_channel,
                self.augment if name == "train" else None,
            )
        self.datasets[TEST_SET] = FusedViewsDataset(
            test_table,
            test.loc[test_table["session_id"], self.labels].to_numpy(),
            self.image_size,
            self.green_channel,
        )
        if refinement is not None:
            ref_table = pool.loc[pool["session_id"].isin(refinement.index)].reset_index(drop=True)
            self.datasets[REFINEMENT_SET] = FusedViewsDataset(
                ref_table,
                refinement.loc[ref_table["session_id"], self.labels].to_numpy(),
                self.image_size,
                self.green_channel,
            )
        # Every image this run will read, before the first epoch (issue 21, item 5): a damaged file found
        # by the test loop after training costs the whole run.
        used = pd.concat([d.table for d in self.datasets.values()]).drop_duplicates("session_id")
        try:
            check_session_images(used, self.views_path, decode=self.check_images == "decode")
        except SpineDataError:
            self.datasets = {}  # a later setup() must check again, not find the datasets ready
            raise
        self.summary = {
            "views": str(self.views_path),
            "labels": self.labels,
            "train_on": self.train_on,
            **label_info,
            "sessions_read": len(sessions),
            "excluded_nlp_development": int(in_nlp.sum()),
            "excluded_test_patients": int((~in_nlp & sessions["patient_id"].isin(test_patients)).sum()),
            "image_size": self.image_size,
            "green_channel": self.green_channel,
            "sizes": {k: len(v) for k, v in self.datasets.items()},
            "positives": {
                k: {f: int(np.nansum(v.targets[:, j].numpy() == 1)) for j, f in enumerate(self.labels)}
                for k, v in self.datasets.items()
            },
        }
        rank_zero_info(
            f"[reportsup] spine data: {json.dumps(self.summary['sizes'])}, trained on {label_info['label_source']}"
        )
        self._write_outputs(run_split)

    def _write_outputs(self, run_split: RunSplit) -> None:
        if self.output_dir is None or (self.trainer is not None and not self.trainer.is_global_zero):
            return
        # splits.csv (or on resume: checked against the split this run trained on) and data_summary.json
        run_split.save(self.output_dir, data_summary=self.summary)

    # -- loaders -----------------------------------------------------------------------------
    def _loader(self, name: str, train: bool) -> DataLoader:
        return DataLoader(
            self.datasets[name],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(name, train=False) for name in self.test_set_names]

    @property
    def test_set_names(self) -> list[str]:
        return [TEST_SET] + ([REFINEMENT_SET] if REFINEMENT_SET in self.datasets else [])

    def test_table(self, name: str) -> pd.DataFrame:
        return self.datasets[name].table
