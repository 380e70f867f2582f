"""``reportsup-damil-predict``: run a trained DaMIL checkpoint on a scan manifest (no labels needed).

Per scan: the 17 x 4 region probability matrix and the scan-level probabilities
(``predictions.csv``), the abnormality maps and predicted region segmentation as NIfTI in the scan's
own geometry and PNG overlays of the top findings (:mod:`lightning_modules.crossdl.damil.outputs`). The
preprocessing settings and the training set's intensity statistics come from the checkpoint. Scans
that fail validation are listed in ``skipped_scans.csv`` with the reason, never silently dropped.

    reportsup-damil-predict outputs/damil_multiscale/<run>/checkpoints/best-epoch07.ckpt manifest.csv \\
        --out-dir predictions
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from datamodules.crossdl.head_ct.dicom_series import ScanError, validate_scan
from datamodules.crossdl.head_ct.manifest import ManifestError, read_scan_manifest
from datamodules.crossdl.head_ct.transforms import (
    IMAGE,
    REGION_MASK,
    PreprocessConfig,
    normalization,
    preprocessing,
)
from lightning_modules.crossdl.damil.module import DaMILModule
from lightning_modules.crossdl.damil.outputs import write_scan_outputs


def load_checkpoint(path: Path) -> tuple[DaMILModule, PreprocessConfig, dict]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    missing = [k for k in ("intensity_stats", "preprocessing") if k not in checkpoint]
    if missing:
        raise ManifestError(
            f"{path}: the checkpoint lacks {missing}; it was not written by a DaMIL training run of this version."
        )
    module = DaMILModule.load_from_checkpoint(path, map_location="cpu")
    module.eval()
    pre = dict(checkpoint["preprocessing"])
    pre["spatial_size"] = tuple(pre["spatial_size"])
    return module, PreprocessConfig(**pre), checkpoint["intensity_stats"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--top", type=int, default=3, help="overlays for the top findings per scan")
    parser.add_argument("--no-maps", action="store_true", help="only the probability table")
    args = parser.parse_args(argv)
    if (args.out_dir / "predictions.csv").exists():
        sys.exit(f"error: {args.out_dir / 'predictions.csv'} exists; choose a new --out-dir.")
    try:
        module, config, stats = load_checkpoint(args.checkpoint)
        manifest = read_scan_manifest(args.manifest)
    except (ManifestError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    use_atlas = module.hparams.inference_regions == "atlas" or module.hparams.mil_mode == "static"
    if use_atlas and "region_mask" not in manifest.columns:
        sys.exit(
            "error: this model uses the atlas segmentation at inference: the manifest needs region_mask."
        )
    items, rows, skipped = [], [], []
    for row in manifest.to_dict("records"):
        try:
            validate_scan(row["image"])
        except ScanError as err:
            skipped.append({"scan_id": row["scan_id"], "reason": err.reason, "message": str(err)})
            continue
        item = {IMAGE: row["image"]}
        if use_atlas:
            item[REGION_MASK] = row["region_mask"]
        items.append(item)
        rows.append(row)
    mask_keys = (REGION_MASK,) if use_atlas else ()
    pre = preprocessing(config, mask_keys)
    norm = normalization(stats["mean"], stats["std"])
    space = module.space
    out_rows = []
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(tqdm(rows, desc="DaMIL inference")):
        # One pass per scan, no cache: the preprocessed image keeps MONAI's record for inverting the maps.
        windowed = pre(items[i])
        item = norm(dict(windowed))
        batch = {k: v[None] for k, v in item.items() if torch.is_tensor(v)}
        with torch.no_grad():
            pred = module.predict_scan(batch)
        probs = pred["region_probs"][0].numpy()
        record = {"scan_id": row["scan_id"], "patient_id": row["patient_id"]}
        record.update({f"scan__{t}": float(pred["scan_probs"][0, j]) for j, t in enumerate(space.types)})
        record.update(
            {
                f"{r}__{t}": float(probs[a, j])
                for a, r in enumerate(space.anatomical_regions)
                for j, t in enumerate(space.types)
            }
        )
        out_rows.append(record)
        if not args.no_maps:
            write_scan_outputs(
                row["scan_id"],
                windowed[IMAGE],
                pred["abnormality"][0],
                pred["regions"][0],
                probs,
                space,
                pre,
                args.out_dir,
                args.top,
            )
    pd.DataFrame(out_rows).to_csv(args.out_dir / "predictions.csv", index=False)
    if skipped:
        pd.DataFrame(skipped).to_csv(args.out_dir / "skipped_scans.csv", index=False)
    print(f"scans: {len(rows)} predicted, {len(skipped)} skipped; written to {args.out_dir}")


if __name__ == "__main__":
    main()
