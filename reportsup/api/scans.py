"""The DaMIL scan analyzer as a Python API (Liu et al. 2023, "Image analyzer architecture and training",
Fig. 4): a head-CT scan in, the region x type abnormality probabilities, the scan-level probabilities
and, optionally, the abnormality maps and the predicted region segmentation out.

::

    from reportsup import ScanAnalyzer

    analyzer = ScanAnalyzer.from_pretrained("outputs/damil_multiscale/<run>")  # or a .ckpt, or an export
    table = analyzer.predict("manifest.csv")  # scan_id, patient_id, image
    table.sort_values("scan__intraparenchymal_hyperdensity", ascending=False).head()
    analyzer.save_pretrained("damil_export")  # model.safetensors + config.json, loadable without pickle

Each scan is preprocessed exactly as in training (:mod:`datamodules.crossdl.head_ct.transforms`: RAS
orientation, HU window, crop, resize, z-scoring with the training split's intensity statistics); the
preprocessing settings and the statistics travel with the weights (the checkpoint's ``preprocessing`` and
``intensity_stats``, or the exported ``config.json``). ``reportsup-damil-predict`` is a thin wrapper
over :meth:`ScanAnalyzer.predict_scans`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from datamodules.crossdl.head_ct.dicom_series import ScanError, validate_manifest_row
from datamodules.crossdl.head_ct.manifest import REQUIRED, ManifestError, read_scan_manifest
from datamodules.crossdl.head_ct.scan_checks import as_scan_error
from datamodules.crossdl.head_ct.transforms import (
    IMAGE,
    REGION_MASK,
    PreprocessConfig,
    normalization,
    preprocessing,
)
from lightning_modules.common.label_manifest import chosen_thresholds, label_thresholds
from lightning_modules.crossdl.damil.module import DAMIL_TASK, DaMILModule, prediction_columns
from lightning_modules.crossdl.damil.outputs import write_scan_outputs
from reportsup.api.image_cards import USAGE, card_files
from reportsup.api.loading import (
    REPORTSUP_KEY,
    is_exported,
    load_checkpoint,
    read_exported,
    reportsup_config,
    resolve,
    save_exported,
)
from reportsup.contracts.labels.crossdl import LabelSpace
from reportsup.contracts.run_dir import (
    BEST_CHECKPOINT_PREFIX,
    CHECKPOINTS,
    read_metrics,
    run_dir_of_checkpoint,
)
from reportsup.version import __version__

#: what ``predict_scans`` lists for a scan that fails validation (never silently dropped)
SKIPPED_COLUMNS = ["scan_id", "reason", "message"]


class ScanModelError(ValueError):
    """A checkpoint or exported folder that is not a usable DaMIL model; the message names what is missing."""


@dataclass
class ScanPredictions:
    """:meth:`ScanAnalyzer.predict_scans`' result: one row per predicted scan, and the scans that failed
    validation (``scan_id``, ``reason`` code, ``message`` with the fix)."""

    table: pd.DataFrame
    skipped: pd.DataFrame


class ScanAnalyzer:
    """A trained DaMIL analyzer with its preprocessing.

    Args:
        module: the DaMIL LightningModule with its trained weights.
        preprocess: the deterministic preprocessing it was trained with.
        intensity_stats: ``{"mean", "std"}`` of the training voxels after windowing (z-scoring).
        dice_thresholds: per-type map thresholds chosen on validation (``metrics.json``), if known.

    Output columns (those of ``reportsup-damil-predict``'s ``predictions.csv``): ``scan_id``,
    ``patient_id``, ``scan__<type>`` (the scan-level probability: the maximum of that type's abnormality
    map) and ``<region>__<type>`` for the 17 anatomical regions x 4 types (final scale's MIL prediction).
    """

    task = DAMIL_TASK

    def __init__(
        self,
        module: DaMILModule,
        preprocess: PreprocessConfig,
        intensity_stats: Mapping[str, float],
        dice_thresholds: Mapping[str, float] | None = None,
    ) -> None:
        self.module = module.eval()
        self.preprocess = preprocess
        self.intensity_stats = {k: float(intensity_stats[k]) for k in ("mean", "std")}
        self.dice_thresholds = dict(dice_thresholds or {})
        self.source: Path | None = None  # the .ckpt or exported folder it was loaded from
        # fails early (std 0) rather than at the first scan
        self._normalize = normalization(self.intensity_stats["mean"], self.intensity_stats["std"])

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        map_location: str | torch.device = "cpu",
        trust_checkpoint: bool = False,
    ) -> ScanAnalyzer:
        """Load a run folder (its best checkpoint), a DaMIL ``.ckpt`` or a folder written by
        :meth:`save_pretrained` / ``reportsup-export``. Checkpoints are read with
        ``torch.load(weights_only=True)`` (:func:`reportsup.api.loading.load_checkpoint`), exported
        folders with safetensors: nothing is unpickled unless ``trust_checkpoint=True``."""
        source = resolve(path)
        if is_exported(source):
            config, state = read_exported(source)
            analyzer = cls._from_exported(reportsup_config(config, str(source)), state, str(source))
        else:
            checkpoint = load_checkpoint(source, map_location, trust_checkpoint)
            analyzer = cls.from_checkpoint_dict(checkpoint, where=str(source))
            analyzer.dice_thresholds = tested_dice_thresholds(source)
        analyzer.source = source
        return analyzer

    @classmethod
    def from_checkpoint_dict(cls, checkpoint: Mapping[str, Any], where: str = "checkpoint") -> ScanAnalyzer:
        """From a loaded DaMIL Lightning checkpoint (``state_dict``, ``hyper_parameters``,
        ``intensity_stats``, ``preprocessing``, written by :meth:`DaMILModule.on_save_checkpoint`)."""
        manifest = checkpoint.get("label_manifest") or {}
        if manifest and manifest.get("task") != DAMIL_TASK:
            raise ScanModelError(
                f"{where}: a {manifest.get('task')!r} checkpoint, not a DaMIL analyzer ({DAMIL_TASK!r}); "
                "load it with the class reportsup.api.API_CLASSES names for that task."
            )
        missing = [
            k
            for k in ("state_dict", "hyper_parameters", "intensity_stats", "preprocessing")
            if k not in checkpoint
        ]
        if missing:
            raise ScanModelError(
                f"{where}: the checkpoint lacks {missing}; it was not written by a DaMIL training run of this "
                "version (the intensity statistics and preprocessing are saved by a run with a head-CT DataModule)."
            )
        module = _build_module(checkpoint["hyper_parameters"], checkpoint["state_dict"], where)
        module.label_thresholds = chosen_thresholds(manifest)  # chosen on validation, if they were
        return cls(module, _preprocess_config(checkpoint["preprocessing"]), checkpoint["intensity_stats"])

    @classmethod
    def _from_exported(cls, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str):
        if config.get("task") != DAMIL_TASK:
            raise ScanModelError(
                f"{where}: an exported {config.get('task')!r} model, not a DaMIL analyzer ({DAMIL_TASK!r})."
            )
        missing = [k for k in ("hyper_parameters", "preprocessing", "intensity_stats") if k not in config]
        if missing:
            raise ScanModelError(f"{where}/config.json: the {REPORTSUP_KEY!r} section lacks {missing}.")
        module = _build_module(config["hyper_parameters"], state, where)
        module.label_thresholds = chosen_thresholds(config.get("label_manifest"))
        return cls(
            module,
            _preprocess_config(config["preprocessing"]),
            config["intensity_stats"],
            config.get("dice_thresholds"),
        )

    # ----------------------------------------------------------------------------- export
    def label_manifest(self) -> dict[str, Any]:
        """What the outputs mean, as every reportsup checkpoint records it."""
        return self.module.label_manifest()

    @property
    def thresholds(self) -> dict[str, float]:
        """``{column: threshold}`` the ``scan__<type>_positive`` columns apply (``prob > threshold``): those
        chosen on validation (``model.decision_threshold=validation``), else the fixed decision threshold."""
        return label_thresholds(self.label_manifest())

    def config(self) -> dict[str, Any]:
        """The ``reportsup`` section of the exported ``config.json``: everything needed to rebuild the
        network (hyper-parameters with the resolved label space), the preprocessing, the intensity
        statistics, the thresholds and the version."""
        hparams = dict(self.module.hparams)
        hparams["label_space"] = _label_space_dict(self.space)
        return {
            "task": DAMIL_TASK,
            "framework_version": __version__,
            "labels": prediction_columns(self.space),
            "label_space": hparams["label_space"],
            "hyper_parameters": hparams,
            "preprocessing": _jsonable(dataclasses.asdict(self.preprocess)),
            "intensity_stats": self.intensity_stats,
            # t of the top-k MIL pooling (paper: 0.5) and the abnormality-map threshold for the Dice
            "threshold": float(self.module.hparams.threshold),
            "dice_threshold": self.module.hparams.dice_threshold,
            "dice_thresholds": self.dice_thresholds,
            "label_manifest": self.label_manifest(),
        }

    def save_pretrained(self, folder: str | Path, run_dir: str | Path | None = None) -> Path:
        """Write ``model.safetensors``, ``config.json`` and the model card ``README.md`` (training data and
        test metrics from ``run_dir``, default: the run of the checkpoint it came from) into a new folder;
        :meth:`from_pretrained` rebuilds the analyzer from it without unpickling."""
        usage = USAGE.format(cls="ScanAnalyzer", var="analyzer", arg='"manifest.csv"')
        files = card_files(self.label_manifest(), self.source, run_dir, usage)
        return save_exported(folder, {REPORTSUP_KEY: self.config()}, self.module.state_dict(), files)

    # ----------------------------------------------------------------------------- inference
    @property
    def space(self) -> LabelSpace:
        return self.module.space

    @property
    def uses_atlas(self) -> bool:
        """Static MIL / atlas-at-inference models (Table S2 C, D) need the atlas segmentation per scan."""
        hp = self.module.hparams
        return hp.inference_regions == "atlas" or hp.mil_mode == "static"

    def predict(
        self,
        manifest: str | Path | pd.DataFrame,
        maps_dir: str | Path | None = None,
        top: int = 3,
        progress: bool = False,
    ) -> pd.DataFrame:
        """Probabilities for every valid scan of a head-CT manifest (``scan_id``, ``patient_id``,
        ``image``; ``region_mask`` for atlas models); scans failing validation are left out with a
        warning (:meth:`predict_scans` returns them). ``maps_dir``: also write NIfTI maps and PNG
        overlays of the ``top`` findings there (:func:`~lightning_modules.crossdl.damil.outputs.write_scan_outputs`)::

            manifest = pd.DataFrame({"scan_id": ["s1"], "patient_id": ["p1"], "image": ["/data/s1.nii.gz"]})
            analyzer.predict(manifest, maps_dir="maps_out")  # + maps_out/maps/s1_abnormality.nii.gz
        """
        result = self.predict_scans(manifest, maps_dir, top, progress)
        if len(result.skipped):
            first = result.skipped.iloc[0]
            warnings.warn(
                f"{len(result.skipped)} scan(s) failed validation and were not predicted, e.g. "
                f"{first['scan_id']}: {first['message']}",
                stacklevel=2,
            )
        return result.table

    def predict_scans(
        self,
        manifest: str | Path | pd.DataFrame,
        maps_dir: str | Path | None = None,
        top: int = 3,
        progress: bool = False,
    ) -> ScanPredictions:
        """:meth:`predict`, returning the skipped scans too."""
        table = scan_manifest(manifest)
        if self.uses_atlas and REGION_MASK not in table.columns:
            raise ManifestError(
                f"{_name(manifest)}: this model uses the atlas segmentation at inference "
                f"(model.inference_regions={self.module.hparams.inference_regions}, "
                f"mil_mode={self.module.hparams.mil_mode}): the manifest needs a region_mask column "
                "(reportsup-register-atlas writes it)."
            )
        mask_keys = (REGION_MASK,) if self.uses_atlas else ()
        pre = preprocessing(self.preprocess, mask_keys)
        rows, skipped = [], []
        for row in table.to_dict("records"):
            try:
                # the check command's and the DataModule's own row check (scan headers, masks' grid)
                validate_manifest_row(row["image"], {k: row[k] for k in mask_keys})
            except ScanError as err:
                skipped.append({"scan_id": row["scan_id"], "reason": err.reason, "message": str(err)})
                continue
            rows.append(row)
        records = []
        for row in tqdm(rows, desc="DaMIL inference", disable=not progress):
            # One pass per scan, no cache: the preprocessed image keeps MONAI's record of the applied
            # operations, which inverting the maps into the scan's geometry needs.
            try:
                windowed = pre({IMAGE: row["image"], **{k: row[k] for k in mask_keys}})
            except Exception as err:  # voxels that are NaN or do not decode: skip the scan, say why
                bad = as_scan_error(err, row["scan_id"], str(row["image"]))
                skipped.append({"scan_id": row["scan_id"], "reason": bad.reason, "message": str(bad)})
                continue
            pred = self.predict_preprocessed(windowed)
            region_probs = pred["region_probs"][0].numpy()
            records.append(
                {"scan_id": row["scan_id"], "patient_id": row["patient_id"]}
                | self._row(region_probs, pred["scan_probs"][0].numpy())
            )
            if maps_dir is not None:
                write_scan_outputs(
                    row["scan_id"],
                    windowed[IMAGE],
                    pred["abnormality"][0],
                    pred["regions"][0],
                    region_probs,
                    self.space,
                    pre,
                    Path(maps_dir),
                    top,
                )
        columns = ["scan_id", "patient_id", *prediction_columns(self.space), *self.decision_columns]
        return ScanPredictions(
            pd.DataFrame(records, columns=columns), pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)
        )

    @torch.no_grad()
    def predict_preprocessed(self, item: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The module's :meth:`~DaMILModule.predict_scan` on one preprocessed (not yet z-scored) item."""
        item = self._normalize(dict(item))
        device = next(self.module.parameters()).device
        batch = {k: v[None].to(device) for k, v in item.items() if torch.is_tensor(v)}
        return {k: v.cpu() for k, v in self.module.predict_scan(batch).items()}

    @property
    def decision_columns(self) -> list[str]:
        """``scan__<type>_positive``: 1 where the scan-level probability exceeds that column's threshold."""
        return [f"scan__{t}_positive" for t in self.space.types]

    def _row(self, region_probs: np.ndarray, scan_probs: np.ndarray) -> dict[str, float]:
        space = self.space
        row = {f"scan__{t}": float(scan_probs[j]) for j, t in enumerate(space.types)}
        thresholds = self.thresholds
        row.update(
            {
                f"scan__{t}_positive": int(scan_probs[j] > thresholds[f"scan__{t}"])
                for j, t in enumerate(space.types)
            }
        )
        row.update(
            {
                f"{r}__{t}": float(region_probs[a, j])
                for a, r in enumerate(space.anatomical_regions)
                for j, t in enumerate(space.types)
            }
        )
        return row


def tested_dice_thresholds(checkpoint: Path) -> dict[str, float]:
    """Per type, the abnormality-map threshold the run's test used (``metrics.json``: ``test`` ->
    ``dice:<type>`` -> ``dice_threshold``, chosen on validation or the fixed value), when ``checkpoint``
    is the run's best checkpoint (the one tested); else ``{}``."""
    if checkpoint.parent.name != CHECKPOINTS or not checkpoint.name.startswith(BEST_CHECKPOINT_PREFIX):
        return {}
    try:
        tested = read_metrics(run_dir_of_checkpoint(checkpoint)).get("test", {})
    except FileNotFoundError:  # not tested (yet)
        return {}
    return {
        key.removeprefix("dice:"): float(entry["dice_threshold"]["value"])
        for key, entry in tested.items()
        if key.startswith("dice:") and "dice_threshold" in entry
    }


def scan_manifest(manifest: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A manifest file read and checked (:func:`~datamodules.crossdl.head_ct.manifest.read_scan_manifest`:
    paths relative to the manifest's folder), or a DataFrame checked for the same columns (relative paths
    are relative to the working directory)."""
    if not isinstance(manifest, pd.DataFrame):
        return read_scan_manifest(manifest)
    missing = [c for c in REQUIRED if c not in manifest.columns]
    if missing:
        raise ManifestError(
            f"manifest DataFrame: missing column(s) {missing}; a scan manifest needs {list(REQUIRED)} "
            f"(found {list(manifest.columns)})."
        )
    table = manifest.reset_index(drop=True).copy()
    for column in REQUIRED:
        table[column] = table[column].astype(str).str.strip()
        empty = np.flatnonzero(table[column].isin(["", "nan", "None", "<NA>"]))
        if len(empty):
            raise ManifestError(
                f"manifest DataFrame: row {empty[0]}, column '{column}' is empty; every scan needs it."
            )
    return table


def _build_module(hparams: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str) -> DaMILModule:
    try:
        module = DaMILModule(**dict(hparams))
    except TypeError as err:
        raise ScanModelError(
            f"{where}: its hyper-parameters do not fit this version's DaMILModule ({err}); use the reportsup "
            "version that trained it."
        ) from None
    result = module.load_state_dict(dict(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ScanModelError(
            f"{where}: the weights do not match the network its hyper-parameters describe "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})."
        )
    return module.eval()


def _preprocess_config(values: Mapping[str, Any]) -> PreprocessConfig:
    pre = {k: v for k, v in dict(values).items() if k != "extra"}
    pre["spatial_size"] = tuple(int(s) for s in pre["spatial_size"])
    return PreprocessConfig(**pre)


def _label_space_dict(space: LabelSpace) -> dict[str, Any]:
    return _jsonable(dataclasses.asdict(space))


def _jsonable(value: Any) -> Any:
    """Tuples to lists (JSON has no tuples), recursively; mappings to dicts."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_jsonable(v) for v in value]
    return value


def _name(manifest: object) -> str:
    return "manifest DataFrame" if isinstance(manifest, pd.DataFrame) else str(manifest)
