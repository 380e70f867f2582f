"""What the DaMIL analyzer leaves per scan (Liu et al. 2023, Fig. 4: probability maps over the CT):

* ``maps/<scan_id>_abnormality.nii.gz``: the M abnormality probability maps (4-D NIfTI, last axis =
  type, in the label space's order) and ``maps/<scan_id>_regions.nii.gz``: the predicted region
  segmentation (0 = none, i + 1 = region i where S_i is the largest and > 0.5), both resampled back to
  the scan's own geometry by inverting the preprocessing (MONAI: resize, crop, orientation);
* ``overlays/<scan_id>_<k>_<region>__<type>.png``: for the top findings, the axial slice where S_i * D_j
  peaks, with D_j over the preprocessed CT;
* ``maps/regions.itksnap.txt``, ``maps/regions.ctbl`` and ``maps/abnormality_channels.tsv`` / ``.json``:
  the label tables naming every value of the region map and every channel of the abnormality maps
  (:mod:`~lightning_modules.crossdl.damil.label_tables`, issue 21 item 4); each NIfTI also carries its
  names in a header extension, so a file copied on its own still says what it holds;
* the region x type matrix and scan probabilities go to the evaluator's / predictor's CSV.

DICOM objects (SEG, Parametric Maps, TID 1500 SR) for scans read from a DICOM series are made from these
NIfTI maps by :mod:`~lightning_modules.crossdl.damil.dicom_outputs`.

:class:`DaMILMapWriter` does this for the test set; ``reportsup-damil-predict`` for any manifest.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import matplotlib
import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from datamodules.crossdl.head_ct.transforms import IMAGE
from lightning_modules.crossdl.damil.label_tables import (
    abnormality_header_names,
    region_header_names,
    write_label_tables,
)
from reportsup.contracts.labels.crossdl import LabelSpace
from reportsup.contracts.run_dir import HOLDOUTS, MAPS, OVERLAYS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _invert(values: torch.Tensor, like: MetaTensor, preprocess, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Channels (C, H, W, D) on the preprocessed grid -> (array in the scan's geometry, affine)."""
    channels = []
    for c in values:
        ops = copy.deepcopy(list(like.applied_operations))
        m = MetaTensor(c[None].float(), meta=dict(like.meta), applied_operations=ops)
        for op in m.applied_operations:
            if op.get("class") == "Resize":
                op.setdefault("extra_info", {})["mode"] = mode  # masks back with nearest neighbour
        inv = preprocess.inverse({"image": m})["image"]
        channels.append(inv[0].numpy())
    return np.stack(channels, -1), np.asarray(inv.affine)


def predicted_region_map(regions: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(N, ...) region probabilities -> integer map (0 = none, i + 1 = argmax region where S > threshold)."""
    best, idx = regions.max(0)
    return torch.where(best > threshold, idx + 1, torch.zeros_like(idx))


def top_findings(region_probs: np.ndarray, space: LabelSpace, top: int) -> list[tuple[int, int, float]]:
    order = np.argsort(region_probs.ravel())[::-1][:top]
    n_t = len(space.types)
    return [(int(k // n_t), int(k % n_t), float(region_probs.ravel()[k])) for k in order]


def overlay_png(image: np.ndarray, prob_map: np.ndarray, peak: np.ndarray, title: str, path: Path) -> Path:
    """Axial slice (the one where ``peak`` is largest) of the CT with the probability map on top."""
    z = int(np.argmax(peak.reshape(-1, peak.shape[-1]).max(0)))
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(np.rot90(image[:, :, z]), cmap="gray")
    ax.imshow(np.rot90(prob_map[:, :, z]), cmap="jet", alpha=0.4, vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _name_contents(image: nib.Nifti1Image, names: dict[str, Any]) -> None:
    """Put the names of a map's values / channels into the NIfTI itself: a short ``descrip`` (80 bytes,
    shown by most viewers' header panels) and the full table as a JSON comment extension (code 6)."""
    image.header["descrip"] = names["descrip"][:79].encode()
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", json.dumps(names).encode()))


def write_scan_outputs(
    scan_id: str,
    image: MetaTensor,
    abnormality: torch.Tensor,
    regions: torch.Tensor,
    region_probs: np.ndarray,
    space: LabelSpace,
    preprocess,
    out_dir: Path,
    top: int = 3,
) -> dict[str, Any]:
    """NIfTI maps in the scan's geometry and PNG overlays of the top findings for one scan."""
    size = image.shape[1:]
    d = F.interpolate(abnormality[None].float(), size=size, mode="trilinear")[0]
    s = F.interpolate(regions[None].float(), size=size, mode="trilinear")[0]
    maps, affine = _invert(d, image, preprocess, "trilinear")
    labels, _ = _invert(predicted_region_map(s)[None], image, preprocess, "nearest")
    (out_dir / MAPS).mkdir(parents=True, exist_ok=True)
    abnormality_path = out_dir / MAPS / f"{scan_id}_abnormality.nii.gz"
    abnormality = nib.Nifti1Image(maps.astype(np.float32), affine)
    _name_contents(abnormality, abnormality_header_names(space))
    nib.save(abnormality, abnormality_path)
    region_map = nib.Nifti1Image(np.rint(labels[..., 0]).astype(np.uint8), affine)
    _name_contents(region_map, region_header_names(space))
    nib.save(region_map, out_dir / MAPS / f"{scan_id}_regions.nii.gz")
    # one set per maps/ folder; rewritten with every scan (four small files) so the folder is never
    # without them, whichever scan was written last
    write_label_tables(space, out_dir / MAPS)
    pngs = []
    ct = image[0].numpy()
    for rank, (i, j, p) in enumerate(top_findings(region_probs, space, top), start=1):
        region, kind = space.anatomical_regions[i], space.types[j]
        peak = (s[i] * d[j]).numpy()
        title = f"{scan_id}: {kind.replace('_', ' ')} in {region.replace('_', ' ')} (p = {p:.2f})"
        pngs.append(
            overlay_png(
                ct, d[j].numpy(), peak, title, out_dir / OVERLAYS / f"{scan_id}_{rank}_{region}__{kind}.png"
            )
        )
    return {"abnormality_map": abnormality_path, "overlays": pngs}


class DaMILMapWriter(pl.Callback):
    """Writes :func:`write_scan_outputs` for every scan of every test set (``max_scans`` caps it; 0 = none)."""

    def __init__(self, output_dir: str, top_findings: int = 3, max_scans: int | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.top, self.max_scans = top_findings, max_scans
        self.written = 0

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.written = 0

    def on_test_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.max_scans is not None and self.written >= self.max_scans:
            return
        dm = trainer.datamodule
        name = dm.test_set_names[dataloader_idx]
        preprocess, table = dm.preprocess_transform, dm.test_table(name)
        # The internal test set's outputs in the run directory; a hold-out's under holdouts/<name>/.
        out_dir = self.output_dir if name == "test" else self.output_dir / HOLDOUTS / name
        n_r, n_t = pl_module.n_regions, pl_module.n_types
        for k, index in enumerate(batch["index"].tolist()):
            # The cache keeps arrays, not MONAI's record of the applied operations: preprocess this test
            # scan once more (uncached) to get the windowed image with the record needed for inversion.
            reference = preprocess({IMAGE: table["image"].iloc[index]})[IMAGE]
            region_probs = outputs["probs"][k, : n_r * n_t].reshape(n_r, n_t).cpu().numpy()
            write_scan_outputs(
                batch["scan_id"][k],
                reference,
                outputs["_abnormality"][k].cpu(),
                outputs["_regions"][k].cpu(),
                region_probs,
                pl_module.space,
                preprocess,
                out_dir,
                self.top,
            )
            self.written += 1
