"""HeadCTDataModule: head-CT scans, masks and abnormality matrices for the DaMIL analyzer
(Liu et al. 2023, STAR Methods "CT image preprocessing", "Image analyzer architecture and training").

* reads a scan manifest (:mod:`datamodules.crossdl.head_ct.manifest`) and its labels (``reportsup-discretize``
  output or ground-truth matrices), splits by patient (DESIGN.md), optionally subsamples the training
  scans (``max_train_scans``, for training-size curves);
* preprocessing as the paper (:mod:`datamodules.crossdl.head_ct.transforms`), cached on disk with MONAI's
  :class:`~monai.data.PersistentDataset` in ``cache_dir/<hash of the preprocessing config>``: after the
  first epoch no DICOM is decoded again; an item is re-cached when its files change (size/mtime);
* z-scoring with the mean/std of all training voxels, computed once, written to
  ``intensity_stats.json`` in the run directory and reused from there (or from ``intensity_stats``);
* per item: ``image`` (1, H, W, D), ``region_mask`` (1, H, W, D; 0 = none, i + 1 = region i) when the
  manifest has one, ``voxel_mask`` (M, H, W, D) + ``has_voxel_mask``, ``abnormality`` (regions x types,
  incl. other/unclear), ``region_labels`` (17 x 4), ``scan_labels`` (4: union over all regions),
  ``unclear`` (the paper zeroes the MIL losses of such scans), ``scan_id``, ``patient_id``;
* ``positive_rates`` = f_ij over the training split (the DaMIL loss's positive weights);
* batch size 1 as the paper (configurable), workers and pinned memory configurable.

Hold-out test sets (``holdouts``: ``{name: {manifest_path, labels_path}}``, or ``{name: manifest_path}``
for a manifest with its own label columns; e.g. the paper's prospective set): every scan of
a hold-out patient leaves the development data (as ALARM's hold-outs, :mod:`datamodules.common.reports`), and
each hold-out is scored as its own test set (``test/<name>/...``) by the model of the internal test
set. By default the split is drawn before they leave (``data.split.holdout_order=split_first``,
:class:`reportsup.contracts.splits.SplitProtocol`), so a hold-out added later moves no other patient.

A CQ500 hold-out (paper Figure 6; :mod:`datamodules.crossdl.head_ct.cq500`) is ``{name: {cq500_root,
reads_csv, target_thickness_mm, series_pattern, missing}}`` (the manifest is built from the CQ500 folder:
one series per scan) or ``{name: {manifest_path, reads_csv}}`` (a manifest built before, e.g. registered);
its labels are the readers' majorities (scan level only) and it needs no mask columns (DaMIL infers its
own regions). :attr:`HeadCTDataModule.cq500_sets` names such sets for the evaluator.

Test-only on hold-outs alone (``manifest_path: null``, e.g. ``experiment=damil_cq500``): no development
data, so the model's preprocessing and intensity statistics come from its checkpoint
(``checkpoint_path``, which also overrides the configured preprocessing whenever it is given: a model is
tested on the input it was trained on), or ``intensity_stats`` / the run directory's
``intensity_stats.json``.

Scans whose report has no Findings have unknown labels: they are listed in
``scans_without_labels.csv`` and left out, with a log line. Bad scans stop setup with one message
listing them; ``reportsup-check-scans`` quarantines them up front. Setup runs the check command's own
row check on every scan and its masks
(:func:`~datamodules.crossdl.head_ct.dicom_series.validate_manifest_row`: headers, truncated pixel
data, mask shape and grid); the voxel-level check (NaN / inf) runs where the volume is first loaded and
cached, and any failure there is raised as one ScanError naming the scan and file
(:class:`CheckedScans`), never as a traceback from inside MONAI (issue 21 items 3 and 5).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info
from monai.data import PersistentDataset, list_data_collate
from monai.transforms import Compose
from torch.utils.data import DataLoader, Dataset

from datamodules.common.tables import read_table_file
from datamodules.crossdl.head_ct.cq500 import (
    MAJORITY_PREFIX,
    USED_FINDINGS,
    CQ500Error,
    build_cq500_manifest,
    cq500_holdout_labels,
    majority_table,
    read_reads,
)
from datamodules.crossdl.head_ct.dicom_series import VALIDATION_VERSION, ScanError, validate_manifest_row
from datamodules.crossdl.head_ct.manifest import (
    ManifestError,
    ScanLabels,
    positive_rates,
    read_scan_manifest,
    scan_labels,
)
from datamodules.crossdl.head_ct.scan_checks import as_scan_error
from datamodules.crossdl.head_ct.transforms import (
    IMAGE,
    MATRIX,
    REGION_MASK,
    VOXEL_MASK,
    IntensityStats,
    PreprocessConfig,
    augmentation,
    intensity_stats,
    normalization,
    preprocessing,
)
from reportsup.contracts.labels.crossdl import LabelSpace
from reportsup.contracts.run_dir import (
    DATA_SUMMARY,
    HOLDOUTS,
    INTENSITY_STATS,
    SCANS_WITHOUT_LABELS,
    write_json,
)
from reportsup.contracts.splits import SPLIT_NAMES, RunSplit, SplitError, SplitProtocol

CHECKED_COLUMN = "scan_check"  # written by reportsup-check-scans: rows passed by these checks need no
CHECKED_OK = f"ok-v{VALIDATION_VERSION}"  # re-validation (an older version's "ok" is validated again)
#: keys of a CQ500 hold-out (any of them makes a hold-out a CQ500 set)
CQ500_KEYS = frozenset({"cq500_root", "reads_csv", "target_thickness_mm", "series_pattern", "missing"})


def source_stamp(path: str) -> str:
    """Size and modification time of a file, or of every file in a DICOM folder: part of the cache key."""
    p = Path(path)
    if p.is_dir():
        entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in p.iterdir() if e.is_file())
        return hashlib.sha256(repr(entries).encode()).hexdigest()[:16]
    st = p.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


class CheckedScans(Dataset):
    """The cached (preprocessed) scans of one set, whose loading failures name the scan.

    Why: the first epoch's caching is where voxels are first read (NaN / inf voxels, pixel data that does
    not decode); MONAI reports such a failure as a RuntimeError around the reader's traceback. Every
    failure here becomes one ScanError naming the scan id, the file and the fix
    (``scan_checks.as_scan_error``; issue 21 items 3 and 5).
    """

    def __init__(self, cached: Dataset, scan_ids: Sequence[str], images: Sequence[str]) -> None:
        self.cached, self.scan_ids, self.images = cached, list(scan_ids), list(images)

    def __len__(self) -> int:
        return len(self.scan_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)  # ends iteration (intensity_stats iterates the training set)
        try:
            return self.cached[i]
        except Exception as err:  # any loading failure of an input is reported as the scan's, with a fix
            raise as_scan_error(err, self.scan_ids[i], self.images[i]) from None


class HeadCTDataset(Dataset):
    """Cached preprocessed volumes + this split's labels, then augmentation and z-scoring."""

    def __init__(self, cached: Dataset, records: Sequence[dict], transform) -> None:
        self.cached, self.records, self.transform = cached, list(records), transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {
            **{k: v for k, v in self.cached[i].items() if not k.endswith("stamp")},  # stamps: cache keys only
            **{k: (v.clone() if torch.is_tensor(v) else v) for k, v in self.records[i].items()},
        }
        item = self.transform(item)
        item["region_labels"] = item[MATRIX][: item.pop("n_regions")]
        item["index"] = i
        if "has_voxel_mask" in self.records[i] and VOXEL_MASK not in item:
            item[VOXEL_MASK] = torch.zeros(
                (self.records[i]["n_types"], *item[IMAGE].shape[1:]), dtype=torch.uint8
            )
        item.pop("n_types", None)
        return item


class HeadCTDataModule(L.LightningDataModule):
    def __init__(
        self,
        manifest_path: str | None,
        labels_path: str | None = None,
        label_space: Mapping[str, Any] | None = None,
        region_mask_column: str | None = "region_mask",
        voxel_mask_column: str | None = "voxel_mask",
        spatial_size: Sequence[int] = (160, 160, 80),
        window: Sequence[float] = (-10.0, 80.0),
        crop_margin: int = 0,
        cache_dir: str | None = None,
        split: Mapping[str, Any] | None = None,
        max_train_scans: int | None = None,
        train_fraction: float = 1.0,
        flip_probability: float = 0.5,
        rotate_degrees: float = 15.0,
        intensity_stats: Mapping[str, float] | None = None,
        validate_scans: bool = True,
        min_slices: int = 10,
        batch_size: int = 1,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        output_dir: str | None = None,
        holdouts: Mapping[str, str | Mapping[str, Any]] | None = None,
        checkpoint_path: str | None = None,
    ) -> None:
        super().__init__()
        if not manifest_path and not holdouts:
            raise ManifestError(
                "data.manifest_path is not set: point it at your scan manifest (scan_id, patient_id, image, "
                "report_id) or run with demo=true (a test-only run on hold-outs alone, e.g. "
                "experiment=damil_cq500, gives data.holdouts instead)."
            )
        self.manifest_path = Path(manifest_path) if manifest_path else None
        self.labels_path = labels_path
        self.space = LabelSpace.from_config(**(label_space or {}))
        self.region_mask_column, self.voxel_mask_column = region_mask_column, voxel_mask_column
        self.preprocess = PreprocessConfig(
            tuple(int(s) for s in spatial_size),
            float(window[0]),
            float(window[1]),
            int(crop_margin),
            len(self.space.types),
        )
        self.checkpoint_path = checkpoint_path
        checkpoint_stats = self._from_checkpoint(checkpoint_path) if checkpoint_path else None
        if cache_dir:
            self.cache_dir = Path(cache_dir)
        elif self.manifest_path is not None:
            self.cache_dir = self.manifest_path.parent / ".reportsup_cache"
        else:
            self.cache_dir = Path(output_dir or ".") / ".reportsup_cache"
        self.split_cfg = dict(split or {})
        # Split first: a hold-out added to a test-only run of a trained model moves no other patient.
        self.protocol = SplitProtocol.from_config(self.split_cfg, holdout_order="split_first")
        if max_train_scans is not None and max_train_scans < 1:
            raise SplitError(f"data.max_train_scans={max_train_scans}: give at least 1, or null for all.")
        self.max_train_scans = max_train_scans
        if not 0 < train_fraction <= 1:
            raise SplitError(f"data.train_fraction={train_fraction} must be in (0, 1].")
        self.train_fraction = float(train_fraction)
        self.flip_probability, self.rotate_degrees = float(flip_probability), float(rotate_degrees)
        self.given_stats = dict(intensity_stats) if intensity_stats else checkpoint_stats
        self.validate_scans, self.min_slices = validate_scans, min_slices
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.output_dir = Path(output_dir) if output_dir else None
        self.holdouts = self._check_holdouts(holdouts or {})
        self.datasets: dict[str, Dataset] = {}
        self.tables: dict[str, pd.DataFrame] = {}
        self.stats: IntensityStats | None = None
        self.positive_rates: np.ndarray | None = None
        self.scan_positive_rates: np.ndarray | None = None
        self.summary: dict[str, Any] = {}
        #: hold-outs scored as CQ500 (paper Figure 6) by the DaMIL evaluator
        self.cq500_sets = {name for name, spec in self.holdouts.items() if spec["kind"] == "cq500"}

    # ----------------------------------------------------------------- reading and checking
    def _from_checkpoint(self, path: str) -> dict[str, float] | None:
        """The model's preprocessing (replacing the configured one, logged when they differ) and its
        intensity statistics, from a DaMIL checkpoint (:meth:`DaMILModule.on_save_checkpoint` writes them)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"data.checkpoint_path={path!r}: checkpoint not found.")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        saved = checkpoint.get("preprocessing")
        if saved:
            values = {k: v for k, v in dict(saved).items() if k != "extra"}
            values["spatial_size"] = tuple(int(s) for s in values["spatial_size"])
            preprocess = PreprocessConfig(**values)
            if preprocess != self.preprocess:
                rank_zero_info(
                    f"[reportsup] preprocessing from the checkpoint {path}: {values} (the config said "
                    f"{ {k: v for k, v in vars(self.preprocess).items() if k != 'extra'} })."
                )
            self.preprocess = preprocess
        stats = checkpoint.get("intensity_stats")
        return {k: float(stats[k]) for k in ("mean", "std")} if stats else None

    @staticmethod
    def _check_holdouts(holdouts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        checked = {}
        for name, spec in holdouts.items():
            if isinstance(spec, str | Path):  # a manifest with its own <region>__<type> label columns
                spec = {"manifest_path": spec}
            if name in SPLIT_NAMES:
                raise ManifestError(
                    f"data.holdouts.{name}: '{name}' names a development split; give the hold-out another name."
                )
            if not isinstance(spec, Mapping):
                raise ManifestError(f"data.holdouts.{name}: give a mapping, e.g. {{manifest_path: ...}}.")
            if set(spec) & CQ500_KEYS:
                unknown = set(spec) - CQ500_KEYS - {"manifest_path"}
                if unknown:
                    raise ManifestError(
                        f"data.holdouts.{name}: unknown key(s) {sorted(unknown)} for a CQ500 hold-out; use "
                        f"{sorted(CQ500_KEYS | {'manifest_path'})}."
                    )
                if bool(spec.get("cq500_root")) == bool(spec.get("manifest_path")):
                    raise ManifestError(
                        f"data.holdouts.{name}: a CQ500 hold-out needs either cq500_root (the CQ500 folder: "
                        f"data.holdouts.{name}.cq500_root=/data/CQ500) or manifest_path (+ reads_csv) of a manifest "
                        "built from it, not both."
                    )
                if spec.get("manifest_path") and not spec.get("reads_csv"):
                    raise ManifestError(
                        f"data.holdouts.{name}: a CQ500 manifest_path needs reads_csv too (CQ500's reads.csv), "
                        "unless you give cq500_root."
                    )
                checked[name] = {
                    "kind": "cq500",
                    "manifest_path": str(spec["manifest_path"]) if spec.get("manifest_path") else None,
                    "labels_path": None,
                    **{k: spec.get(k) for k in CQ500_KEYS},
                }
                continue
            if not spec.get("manifest_path"):
                raise ManifestError(
                    f"data.holdouts.{name} needs a manifest_path (and optionally labels_path), e.g. "
                    f"data.holdouts.{name}.manifest_path=prospective/manifest.csv"
                )
            unknown = set(spec) - {"manifest_path", "labels_path"}
            if unknown:
                raise ManifestError(
                    f"data.holdouts.{name}: unknown key(s) {sorted(unknown)}; use manifest_path and labels_path "
                    f"(or {sorted(CQ500_KEYS)} for a CQ500 hold-out)."
                )
            checked[name] = {
                "kind": "matrix",
                "manifest_path": str(spec["manifest_path"]),
                "labels_path": spec.get("labels_path"),
            }
        return checked

    def _cq500_holdout(
        self, name: str, spec: Mapping[str, Any]
    ) -> tuple[pd.DataFrame, pd.DataFrame, ScanLabels, pd.DataFrame]:
        """A CQ500 hold-out as (manifest, usable rows, labels, rows with unknown labels = none): the
        manifest built from the CQ500 folder (written to ``holdouts/<name>/cq500_manifest.csv`` with the
        series report beside it), or read from ``manifest_path`` with the majorities from ``reads_csv``."""
        if spec.get("cq500_root"):
            manifest, report = build_cq500_manifest(
                spec["cq500_root"],
                spec.get("reads_csv"),
                float(spec.get("target_thickness_mm") or 5.0),
                spec.get("series_pattern"),
                self.min_slices,
                spec.get("missing") or "error",
            )
            if self.output_dir is not None and (self.trainer is None or self.trainer.is_global_zero):
                out = self.output_dir / HOLDOUTS / name
                out.mkdir(parents=True, exist_ok=True)
                manifest.to_csv(out / "cq500_manifest.csv", index=False)
                report.to_csv(out / "cq500_series.csv", index=False)
            source = f"{spec['cq500_root']} (data.holdouts.{name})"
        else:
            source = f"{spec['manifest_path']} (data.holdouts.{name})"
            manifest = read_scan_manifest(spec["manifest_path"])
            if any(f"{MAJORITY_PREFIX}{f}" not in manifest.columns for f in USED_FINDINGS):
                majorities = majority_table(read_reads(spec["reads_csv"])).set_index("name")
                absent = manifest["scan_id"][~manifest["scan_id"].isin(majorities.index)]
                if len(absent):
                    raise CQ500Error(
                        f"{source}: scan {absent.iloc[0]!r} (row {int(absent.index[0]) + 2}) has no row in "
                        f"{spec['reads_csv']} ({len(absent)} scan(s)); scan_id must be the reads.csv name."
                    )
                manifest = manifest.join(majorities, on="scan_id")
        labels = cq500_holdout_labels(manifest, self.space, source)
        manifest = manifest.reset_index(drop=True).assign(row_index=np.arange(len(manifest)))
        return manifest, manifest, labels, manifest.iloc[:0][["scan_id", "patient_id"]]

    def _labelled_manifest(
        self, manifest_path: str | Path, labels_path: str | None
    ) -> tuple[pd.DataFrame, pd.DataFrame, ScanLabels, pd.DataFrame]:
        """(manifest, usable rows with ``row_index`` into the labels, labels, rows with unknown labels)."""
        manifest = read_scan_manifest(manifest_path)
        labels_table = read_table_file(Path(labels_path)) if labels_path else None
        labels = scan_labels(manifest, self.space, labels_table, source=str(labels_path or manifest_path))
        unknown = manifest.loc[~labels.known, ["scan_id", "patient_id"]]
        manifest = manifest.assign(row_index=np.arange(len(manifest)))
        return manifest, manifest.loc[labels.known].reset_index(drop=True), labels, unknown

    def _mask_keys(self, manifest: pd.DataFrame, source: str | Path | None = None) -> dict[str, str]:
        keys = {}
        for key, column in ((REGION_MASK, self.region_mask_column), (VOXEL_MASK, self.voxel_mask_column)):
            if column and column in manifest.columns:
                keys[key] = column
        if REGION_MASK in keys:
            empty = manifest.index[manifest[keys[REGION_MASK]] == ""]
            if len(empty):
                raise ManifestError(
                    f"{source or self.manifest_path}: column '{keys[REGION_MASK]}' is empty for scan "
                    f"{manifest.at[empty[0], 'scan_id']!r} ({len(empty)} scan(s)); run reportsup-register-atlas "
                    "or remove those scans (a failed registration is listed in its registration_report.csv)."
                )
        return keys

    def _check_files(
        self, manifest: pd.DataFrame, mask_keys: Mapping[str, str], source: str | Path | None = None
    ) -> None:
        source = source or self.manifest_path
        problems = []
        checked = manifest.get(CHECKED_COLUMN, pd.Series([""] * len(manifest))).astype(str).to_numpy()
        # Scans that passed validation before and whose files are unchanged since (same sizes and
        # modification times, :func:`source_stamp`) are not re-read: re-reading every header is 3 s per
        # run for 160 DICOM series, minutes for an archive. A changed or deleted file is validated again,
        # and so is every scan when the checks change (the validator's version is in the file name).
        record_path = self.cache_dir / f"validated_scans_v{VALIDATION_VERSION}_min{self.min_slices}.json"
        mask_columns = [c for c in mask_keys.values() if c in manifest.columns]
        try:
            record = json.loads(record_path.read_text()) if record_path.exists() else {}
        except (OSError, ValueError):  # unreadable (e.g. a full disk cut it): validate everything again
            record = {}
        recorded = False
        for i, row in enumerate(manifest.itertuples(index=False)):
            masks = {column: getattr(row, column) for column in mask_columns}
            if not self.validate_scans or checked[i] == CHECKED_OK:
                # Passed by reportsup-check-scans (same checks, same version) or checks turned off: only
                # the files' existence, which a moved folder breaks.
                for column, value in masks.items():
                    if value and not Path(value).exists():
                        problems.append(
                            f"scan {row.scan_id}: {value}: {column} file does not exist. Fix: fix the path "
                            "in the manifest (was the data folder moved?)."
                        )
                continue
            # The record's key is the row's files (scan and masks), its value their sizes and mtimes.
            key = json.dumps([str(row.image), *(str(v) for v in masks.values() if v)])
            paths = [str(row.image), *(str(v) for v in masks.values() if v)]
            stamp = [source_stamp(p) for p in paths] if all(Path(p).exists() for p in paths) else None
            if stamp is not None and record.get(key) == stamp:
                continue
            try:
                validate_manifest_row(row.image, masks, min_slices=self.min_slices)
                if stamp is not None:
                    record[key], recorded = stamp, True
            except ScanError as err:
                problems.append(f"scan {row.scan_id}: {err}")
        if recorded:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # written aside and renamed: DDP ranks writing at once never leave a torn file
            partial = record_path.with_name(f"{record_path.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps(record))
            os.replace(partial, record_path)
        if problems:
            shown = "\n  ".join(problems[:5])
            raise ManifestError(
                f"{source}: {len(problems)} scan(s) cannot be used:\n  {shown}"
                f"{chr(10) + '  ...' if len(problems) > 5 else ''}\nRun `reportsup-check-scans "
                f"{source} --out-dir DIR` to quarantine them and use DIR/checked_manifest.csv instead."
            )

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        develop = self.manifest_path is not None
        unknown = pd.DataFrame(columns=["scan_id", "patient_id"])
        mask_keys: dict[str, str] | None = None
        if develop:
            manifest, usable, labels, unknown = self._labelled_manifest(self.manifest_path, self.labels_path)
            mask_keys = self._mask_keys(manifest)
            self._check_files(usable, mask_keys)
        held: dict[str, tuple[pd.DataFrame, ScanLabels]] = {}
        held_manifests: dict[str, pd.DataFrame] = {}
        part_keys: dict[str, dict[str, str]] = {}
        for name, spec in self.holdouts.items():
            if spec["kind"] == "cq500":
                h_manifest, h_usable, h_labels, h_unknown = self._cq500_holdout(name, spec)
                source = f"{spec['cq500_root'] or spec['manifest_path']} (data.holdouts.{name})"
            else:
                h_manifest, h_usable, h_labels, h_unknown = self._labelled_manifest(
                    spec["manifest_path"], spec["labels_path"]
                )
                source = f"{spec['manifest_path']} (data.holdouts.{name})"
            h_keys = self._mask_keys(h_manifest, source)
            # One preprocessing for every set; a CQ500 set may lack masks (DaMIL infers its own regions).
            fits = h_keys == mask_keys or (
                spec["kind"] == "cq500" and h_keys.items() <= (mask_keys or {}).items()
            )
            if mask_keys is not None and not fits:
                raise ManifestError(
                    f"{source}: mask columns {sorted(h_keys.values())} differ from the development manifest's "
                    f"{sorted(mask_keys.values())}; add the same columns (a voxel_mask cell may be empty)."
                )
            if h_usable.empty:
                raise SplitError(f"{source}: no scan has known labels.")
            self._check_files(h_usable, h_keys, spec["manifest_path"] or spec.get("cq500_root"))
            held[name], held_manifests[name], part_keys[name] = (h_usable, h_labels), h_manifest, h_keys
            unknown = pd.concat([unknown, h_unknown.assign(holdout=name)], ignore_index=True)
        run_split, removed, parts, part_labels = None, {}, {}, {}
        train_scans_available = 0
        if develop:
            # Paper (and ALARM's hold-outs): no scan of a hold-out patient trains or selects the model; an
            # unlabelled scan of a hold-out manifest still takes its patient out of the development data.
            run_split = self.protocol.assign(
                usable.assign(id=usable["scan_id"]),
                {
                    name: h_manifest.assign(id=h_manifest["scan_id"], usable=held[name][1].known)
                    for name, h_manifest in held_manifests.items()
                },
                source=str(self.manifest_path),
                what="scans",
                # Stratified (data.split.stratify) by the scan-level types, not the 19 x 4 region cells: a
                # patient's rarest of 4 types leaves strata large enough to deal over 90/5/5, where the rarest
                # of 76 cells would scatter patients into strata of one or two (docs/your-data.md).
                labels=pd.DataFrame(
                    labels.scan[usable["row_index"].to_numpy()], columns=list(self.space.types)
                ),
            )
            removed = run_split.removed()
            usable = usable.assign(split=run_split.split)
            parts = {name: usable.loc[run_split.mask(name)] for name in SPLIT_NAMES}
            train_scans_available = len(parts["train"])
            if self.max_train_scans is not None:
                # The paper's training sizes are scan counts (2,000 / 5,000 / 10,000 / 28,472, Fig. S2C/D); a
                # count above what this split holds trains on all of it, said in the log and data_summary.json.
                # One seeded permutation for every count, so a smaller training set is a subset of a larger one.
                n = min(self.max_train_scans, train_scans_available)
                if n < self.max_train_scans:
                    rank_zero_info(
                        f"[reportsup] data.max_train_scans={self.max_train_scans} but the training split holds "
                        f"{train_scans_available} scans: training on all {train_scans_available}."
                    )
                parts["train"] = parts["train"].sample(n=n, random_state=self.protocol.seed)
            if self.train_fraction < 1:  # whole patients, so the training-size curve stays patient-level
                patients = sorted(set(parts["train"]["patient_id"]))
                rng = np.random.default_rng(self.protocol.seed)
                n_keep = max(1, round(self.train_fraction * len(patients)))
                chosen = set(rng.choice(patients, size=n_keep, replace=False))
                parts["train"] = parts["train"][parts["train"]["patient_id"].isin(chosen)]
            part_labels = dict.fromkeys(parts, labels)
            part_keys.update(dict.fromkeys(parts, mask_keys))
        for name, (h_usable, h_labels) in held.items():
            parts[name], part_labels[name] = h_usable.assign(split=name), h_labels
        cache = self.cache_dir / self.preprocess.key()
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "preprocessing.json").write_text(
            json.dumps(self.preprocess.__dict__, default=str, indent=2) + "\n"
        )
        all_keys: dict[str, str] = {}
        for keys in part_keys.values():
            all_keys.update(keys)
        pre = preprocessing(self.preprocess, tuple(all_keys))
        self.preprocess_transform = pre  # inverted to write predicted maps in each scan's geometry
        cached = {}
        for name, part in parts.items():
            items = []
            for row in part.itertuples(index=False):
                item = {IMAGE: row.image, "stamp": source_stamp(row.image)}
                for key, column in part_keys[name].items():
                    value = getattr(row, column)
                    if value:
                        item[key] = value
                        item[f"{key}_stamp"] = source_stamp(value)
                items.append(item)
            cached[name] = CheckedScans(
                PersistentDataset(items, transform=pre, cache_dir=cache),
                part["scan_id"].astype(str).tolist(),
                part["image"].astype(str).tolist(),
            )
        self.stats = self._intensity_stats(cached.get("train"))
        if develop:
            train_rows = parts["train"]["row_index"].to_numpy()
            self.positive_rates = positive_rates(
                labels.matrix[train_rows], len(self.space.anatomical_regions)
            )
            self.scan_positive_rates = np.nanmean(labels.scan[train_rows], axis=0).astype(np.float32)
        norm = normalization(self.stats.mean, self.stats.std)
        aug = augmentation(self.space, self.flip_probability, self.rotate_degrees, tuple(all_keys))
        for name, part in parts.items():
            records = [
                self._record(row, part_labels[name], VOXEL_MASK in part_keys[name])
                for row in part.itertuples(index=False)
            ]
            transform = Compose([aug, norm]) if name == "train" else norm
            self.datasets[name] = HeadCTDataset(cached[name], records, transform)
            self.tables[name] = part.drop(columns=["row_index"]).reset_index(drop=True)
        self.summary = {
            "manifest_path": str(self.manifest_path) if develop else None,
            "labels_path": str(self.labels_path),
            "checkpoint_path": self.checkpoint_path,
            "sizes": {k: len(v) for k, v in self.datasets.items()},
            "split": {"unit": self.protocol.unit, "fractions": list(self.protocol.fractions)}
            if develop
            else None,
            "train_scans_available": train_scans_available,
            "max_train_scans": self.max_train_scans,
            "train_fraction": self.train_fraction,
            "scans_without_labels": len(unknown),
            "cache_dir": str(cache),
            "preprocessing": {k: v for k, v in self.preprocess.__dict__.items() if k != "extra"},
            "intensity_stats": self.stats.__dict__,
            "masks": mask_keys if develop else all_keys,
            "holdouts": {
                name: {
                    **{k: v for k, v in spec.items() if v is not None},
                    "n_scans": len(held[name][0]),
                    "development_scans_removed": removed.get(name, 0),
                }
                for name, spec in self.holdouts.items()
            },
            "positive_rates_train": dict(
                zip(self.space.anatomical_regions, self.positive_rates.round(4).tolist(), strict=True)
            )
            if develop
            else None,
        }
        rank_zero_info(f"[reportsup] head CT data: {json.dumps(self.summary['sizes'])}, cache {cache}")
        if len(unknown):
            rank_zero_info(
                f"[reportsup] {len(unknown)} scan(s) have reports without Findings (unknown labels): "
                "listed in scans_without_labels.csv and not used."
            )
        self._write_outputs(run_split, unknown)

    def _record(self, row, labels, has_voxel_masks: bool) -> dict[str, Any]:
        i = row.row_index
        n_regions = len(self.space.anatomical_regions)
        record = {
            MATRIX: torch.tensor(labels.matrix[i]),
            "scan_labels": torch.tensor(labels.scan[i]),
            "unclear": bool(labels.unclear[i]),
            "scan_id": row.scan_id,
            "patient_id": row.patient_id,
            "n_regions": n_regions,
        }
        if has_voxel_masks:
            record["has_voxel_mask"] = bool(getattr(row, self.voxel_mask_column))
            record["n_types"] = len(self.space.types)
        return record

    def _intensity_stats(self, train: Dataset | None) -> IntensityStats:
        saved = self.output_dir / INTENSITY_STATS if self.output_dir else None
        if self.given_stats:
            stats = IntensityStats(float(self.given_stats["mean"]), float(self.given_stats["std"]), 0, 0)
        elif saved is not None and saved.exists():
            stats = IntensityStats.load(saved)  # a resumed run keeps its normalisation
        elif train is None:
            raise ManifestError(
                "a test-only run on hold-outs alone (data.manifest_path: null) needs the model's intensity "
                "statistics: give its checkpoint (ckpt_path; experiment=damil_cq500 passes it on as "
                "data.checkpoint_path) or data.intensity_stats={mean: ..., std: ...}."
            )
        else:
            stats = intensity_stats(train)
        if saved is not None and not saved.exists() and (self.trainer is None or self.trainer.is_global_zero):
            saved.parent.mkdir(parents=True, exist_ok=True)
            stats.save(saved)
        return stats

    def _write_outputs(self, run_split: RunSplit | None, unknown: pd.DataFrame) -> None:
        if self.output_dir is None or (self.trainer is not None and not self.trainer.is_global_zero):
            return
        if run_split is None:  # hold-outs alone: the training run's splits.csv and summary stay as they are
            write_json(self.output_dir / HOLDOUTS / DATA_SUMMARY, self.summary)
            return
        # splits.csv (or on resume: checked against the split this run trained on) and data_summary.json
        run_split.save(self.output_dir, data_summary=self.summary)
        if len(unknown):
            unknown.to_csv(self.output_dir / SCANS_WITHOUT_LABELS, index=False)

    @property
    def test_set_names(self) -> list[str]:
        """The internal test split (when there are development data) and every hold-out."""
        return [*(["test"] if self.manifest_path is not None else []), *self.holdouts]

    def test_table(self, name: str) -> pd.DataFrame:
        """Rows of a test set in dataset order (scan_id, patient_id, paths, split)."""
        return self.tables[name]

    # ----------------------------------------------------------------- loaders
    def _loader(self, name: str, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(
            self.datasets[name],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=list_data_collate,
            persistent_workers=self.num_workers > 0,
        )

    def _development(self, what: str) -> None:
        if self.manifest_path is None:
            raise ManifestError(
                f"no {what} data: data.manifest_path is null, so this DataModule only tests its hold-outs; "
                "give data.manifest_path to train, or use a fixed model.dice_threshold (not `validation`)."
            )

    def train_dataloader(self) -> DataLoader:
        self._development("training")
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        self._development("validation")
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per test set, in :attr:`test_set_names` order (``dataloader_idx``)."""
        return [self._loader(name, False, self.eval_batch_size) for name in self.test_set_names]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m datamodules.crossdl.head_ct.datamodule MANIFEST``: set the DataModule up once and describe what training gets."""
    import argparse

    parser = argparse.ArgumentParser(description="Dry-run the head-CT DataModule on a manifest.")
    parser.add_argument("manifest")
    parser.add_argument("--labels", help="labels table (e.g. reportsup-discretize output)")
    parser.add_argument("--region-mask-column", default="region_mask")
    parser.add_argument("--spatial-size", type=int, nargs=3, default=[160, 160, 80])
    parser.add_argument("--cache-dir")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--output-dir", help="where intensity_stats.json, splits.csv, data_summary.json go")
    args = parser.parse_args(argv)
    dm = HeadCTDataModule(
        args.manifest,
        labels_path=args.labels,
        region_mask_column=args.region_mask_column,
        spatial_size=args.spatial_size,
        cache_dir=args.cache_dir,
        num_workers=args.num_workers,
        output_dir=args.output_dir,
    )
    try:
        dm.setup()
    except (ManifestError, SplitError) as err:
        raise SystemExit(f"error: {err}") from None
    print(f"splits: {dm.summary['sizes']}; cache: {dm.summary['cache_dir']}")
    print(f"intensity stats (train): mean {dm.stats.mean:.3f}, std {dm.stats.std:.3f}")
    batch = next(iter(dm.train_dataloader()))
    for key, value in batch.items():
        if torch.is_tensor(value):
            print(f"  {key}: {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}")
    rates = dm.positive_rates
    print(f"positive rates f_ij: {int((rates > 0).sum())} of {rates.size} cells > 0, max {rates.max():.3f}")


if __name__ == "__main__":
    main()
