"""Head-CT preprocessing and augmentation as MONAI dictionary transforms (Liu et al. 2023, STAR Methods
"CT image preprocessing" and "Image analyzer architecture and training").

Deterministic part (cached on disk, :func:`preprocessing`):

1. read the scan (DICOM series folder with pydicom, slices stacked in position order along the slice
   normal by :class:`PositionSortedPydicomReader`, or NIfTI with nibabel) and its masks; a volume holding
   NaN or infinite voxels is refused here (``scan_checks.check_voxels_finite``);
2. orient to RAS, so array axis 0 runs from the patient's left to right: a "left" label is always at
   low indices of axis 0, whatever the scanner wrote;
3. HU window level 35 / width 90 to [0, 255]. The paper prints ``y = min(max(x, -10), 80) / 90 * 255``,
   which maps -10 HU to -28 and cannot be an 8-bit image; the window it describes is
   ``y = (clip(x, -10, 80) + 10) / 90 * 255``, which is what :func:`hu_window` does;
4. crop the empty borders to the head (bounding box of voxels above the window floor);
5. resize to 160 x 160 x 80 (H x W x D; configurable), (tri)linear for the image as the paper's
   "bilinear", nearest neighbour for region and voxel masks.

Random part (training only, :func:`augmentation`): with probability 0.5 a left-right flip of image and
masks that also swaps the paired left/right region labels, in the region map and in the abnormality
matrix (the pairing comes from :class:`~reportsup.contracts.labels.crossdl.LabelSpace`); then a random axial
rotation of up to +-15 degrees. Z-scoring with the training-set mean and std comes last
(:func:`normalization`), so the cache does not depend on the split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor, NibabelReader, PydicomReader
from monai.transforms import (
    CastToTyped,
    Compose,
    CropForegroundd,
    Flip,
    LoadImage,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandomizableTransform,
    RandRotated,
    Resized,
    ScaleIntensityRanged,
)

from datamodules.crossdl.head_ct.dicom_series import MONAI_DICOM_READER_ARGS
from datamodules.crossdl.head_ct.scan_checks import check_voxels_finite, count_moves, position_order
from reportsup.contracts.labels.crossdl import LabelSpace

IMAGE, REGION_MASK, VOXEL_MASK, MATRIX = "image", "region_mask", "voxel_mask", "abnormality"
# Bumped whenever the deterministic pipeline changes meaning, so old caches are not reused.
PIPELINE_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything the cached (deterministic) part depends on; its hash names the cache folder."""

    spatial_size: tuple[int, int, int] = (160, 160, 80)
    window_min: float = -10.0  # level 35, width 90
    window_max: float = 80.0
    crop_margin: int = 0
    n_types: int = 4
    version: int = PIPELINE_VERSION
    extra: Mapping[str, str] = field(default_factory=dict)

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def hu_window(
    keys: Sequence[str], window_min: float = -10.0, window_max: float = 80.0
) -> ScaleIntensityRanged:
    """``(clip(x, lo, hi) - lo) / (hi - lo) * 255`` (the paper's window; see the module docstring)."""
    return ScaleIntensityRanged(keys, a_min=window_min, a_max=window_max, b_min=0.0, b_max=255.0, clip=True)


log = logging.getLogger(__name__)


class PositionSortedPydicomReader(PydicomReader):
    """MONAI's PydicomReader, stacking a series' slices by ImagePositionPatient along the slice normal
    (from ImageOrientationPatient) instead of by InstanceNumber (issue 21 item 2).

    Why: PydicomReader sorts by InstanceNumber and has no option for positions, so a series numbered in
    acquisition or send order was scrambled (and refused by the checks before issue 21); dcm2niix,
    ITK/GDCM and DICOM viewers sort by position. The slices are given temporary InstanceNumbers in
    position order for MONAI's own stacking, which then computes spacing and affine as always; the
    original numbers are put back on the datasets and in the metadata. A reordering is logged with the
    series folder and the number of slices moved. A series without valid geometry (refused by
    ``scan_checks`` before any reader sees it) is left to MONAI's own order.
    """

    def _combine_dicom_series(self, data, filenames):
        data, filenames = list(data), list(filenames)
        order = position_order(data)
        if order is None:
            return super()._combine_dicom_series(data, filenames)
        originals = [ds.get("InstanceNumber") for ds in data]
        moved = count_moves([originals[i] for i in order])
        if moved:
            log.info(
                "%s: %d of %d slices are out of InstanceNumber order; stacked in slice-position order.",
                Path(str(filenames[0])).parent,
                moved,
                len(data),
            )
        for rank, i in enumerate(order):
            data[i].InstanceNumber = rank + 1
        try:
            array, meta = super()._combine_dicom_series(data, filenames)
        finally:
            for ds, number in zip(data, originals, strict=True):
                if number is None:
                    del ds.InstanceNumber
                else:
                    ds.InstanceNumber = number
        first = originals[order[0]]
        if first is None:
            meta.pop("00200013", None)
        elif "00200013" in meta:
            meta["00200013"] = {**meta["00200013"], "Value": [int(first)]}
        return array, meta


class LoadScand(MapTransform):
    """Load each key with the reader its path needs: a folder is a DICOM series
    (:class:`PositionSortedPydicomReader`: rescale slope/intercept applied, i.e. Hounsfield units; slices
    stacked in position order), a file is read by nibabel (NIfTI). Every loaded volume must be finite:
    NaN / infinite voxels raise a ScanError naming the file (``non_finite``; issue 21 item 5), here where
    the voxels are first read, so a scan is refused before the first epoch uses it."""

    def __init__(self, keys: Sequence[str], allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        # LoadImage also instantiates MONAI's GPU DICOM reader, which warns on every CPU-only machine.
        plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
        level = plugin_log.level
        plugin_log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
            self._dicom = LoadImage(
                reader=PositionSortedPydicomReader(**MONAI_DICOM_READER_ARGS),
                image_only=True,
                ensure_channel_first=True,
            )
            self._nifti = LoadImage(reader=NibabelReader(), image_only=True, ensure_channel_first=True)
        plugin_log.setLevel(level)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = Path(str(d[key]))
            d[key] = (self._dicom if path.is_dir() else self._nifti)(str(path))
            check_voxels_finite(d[key], path, "image" if key == IMAGE else f"{key} file")
        return d


class DecodeTypeBitsd(MapTransform):
    """Voxel masks are stored as one integer map with bit j set where abnormality type j is present;
    this turns it into M binary channels (uint8)."""

    def __init__(self, keys: Sequence[str], n_types: int, allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.n_types = n_types

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            bits = torch.as_tensor(d[key]).round().to(torch.int64)[0]
            channels = torch.stack([(bits >> j) & 1 for j in range(self.n_types)]).to(torch.uint8)
            d[key] = _with_meta(channels, d[key])
        return d


def head_voxels(x: torch.Tensor) -> torch.Tensor:
    """Foreground for the border crop: anything brighter than the window floor (air is 0 after windowing)."""
    return x > 0


def preprocessing(cfg: PreprocessConfig, mask_keys: Sequence[str] = (REGION_MASK, VOXEL_MASK)) -> Compose:
    """The deterministic chain (steps 1-5 of the module docstring); masks are optional per item."""
    keys = [IMAGE, *mask_keys]
    modes = ["trilinear"] + ["nearest"] * len(mask_keys)
    return Compose(
        [
            LoadScand(keys),
            DecodeTypeBitsd([VOXEL_MASK], cfg.n_types),
            Orientationd(
                keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")), allow_missing_keys=True
            ),
            hu_window([IMAGE], cfg.window_min, cfg.window_max),
            CropForegroundd(
                keys, source_key=IMAGE, select_fn=head_voxels, margin=cfg.crop_margin, allow_missing_keys=True
            ),
            Resized(keys, spatial_size=cfg.spatial_size, mode=modes, allow_missing_keys=True),
            CastToTyped([IMAGE], dtype=torch.float32),
            *(
                [CastToTyped(list(mask_keys), dtype=torch.uint8, allow_missing_keys=True)]
                if mask_keys
                else []
            ),
        ]
    )


class RandLeftRightFlipd(RandomizableTransform, MapTransform):
    """Left-right flip (paper: p = 0.5) of image and masks along RAS axis 0, with the labels that name a
    side swapped: region-map values of paired regions and the rows of the abnormality matrix."""

    def __init__(
        self,
        keys: Sequence[str],
        space: LabelSpace,
        prob: float = 0.5,
        region_key: str = REGION_MASK,
        matrix_keys: Sequence[str] = (MATRIX,),
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.flip = Flip(spatial_axis=0)
        self.region_key = region_key
        self.matrix_keys = tuple(matrix_keys)
        self.row_permutation = torch.as_tensor(space.flip_permutation())
        self.region_lut = torch.as_tensor(region_label_flip_lut(space), dtype=torch.uint8)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize(None)
        d["flipped"] = bool(self._do_transform)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = self.flip(d[key])
        if self.region_key in d:
            d[self.region_key] = _remap(d[self.region_key], self.region_lut)
        for key in self.matrix_keys:
            if key in d:
                d[key] = d[key][self.row_permutation]
        return d


def _with_meta(values: torch.Tensor, like: object) -> torch.Tensor:
    """``values`` carrying the metadata (affine, file name) of ``like`` if it has any."""
    return MetaTensor(values, meta=dict(like.meta)) if isinstance(like, MetaTensor) else values


def _remap(labels: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    return _with_meta(lut[torch.as_tensor(labels).long()], labels)


def region_label_flip_lut(space: LabelSpace) -> np.ndarray:
    """``lut[v]`` = region-map value after a flip: value i + 1 (anatomical region i) becomes its mirror's."""
    regions = space.anatomical_regions
    mirror = {**space.side_pairs, **{b: a for a, b in space.side_pairs.items()}}
    lut = np.arange(len(regions) + 1)
    for i, r in enumerate(regions):
        lut[i + 1] = regions.index(mirror.get(r, r)) + 1
    return lut


def augmentation(
    space: LabelSpace,
    flip_prob: float = 0.5,
    rotate_degrees: float = 15.0,
    mask_keys: Sequence[str] = (REGION_MASK, VOXEL_MASK),
) -> Compose:
    """Training augmentation of the paper: flip (p = ``flip_prob``), then axial rotation in +-``rotate_degrees``."""
    keys = [IMAGE, *mask_keys]
    steps: list = [RandLeftRightFlipd(keys, space, prob=flip_prob)]
    if rotate_degrees > 0:
        # Axial plane = RAS axes 0 and 1 (MONAI's range_x); zeros outside = air after windowing.
        steps.append(
            RandRotated(
                keys,
                range_x=float(np.deg2rad(rotate_degrees)),
                prob=1.0,
                mode=["bilinear"] + ["nearest"] * len(mask_keys),
                padding_mode="zeros",
                allow_missing_keys=True,
            )
        )
    return Compose(steps)


def normalization(mean: float, std: float) -> NormalizeIntensityd:
    """Z-score with the training-set statistics (paper: "mean and standard variation of all voxels")."""
    if not std > 0:
        raise ValueError(f"intensity std must be > 0, got {std}; the training images are constant.")
    return NormalizeIntensityd([IMAGE], subtrahend=float(mean), divisor=float(std))


@dataclass(frozen=True)
class IntensityStats:
    """Mean and std of all training voxels after windowing, crop and resize; saved with the run."""

    mean: float
    std: float
    n_scans: int
    n_voxels: int

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> IntensityStats:
        return cls(**json.loads(Path(path).read_text()))


def intensity_stats(images: Sequence[torch.Tensor] | object) -> IntensityStats:
    """Exact mean/std over all voxels of the given images (float64 sums; images may be a Dataset of dicts)."""
    total, total_sq, n, scans = 0.0, 0.0, 0, 0
    for item in images:
        x = torch.as_tensor(item[IMAGE] if isinstance(item, Mapping) else item).double()
        total += float(x.sum())
        total_sq += float((x * x).sum())
        n += x.numel()
        scans += 1
    if n == 0:
        raise ValueError("intensity statistics: no training images.")
    mean = total / n
    return IntensityStats(mean, float(np.sqrt(max(total_sq / n - mean * mean, 0.0))), scans, n)
