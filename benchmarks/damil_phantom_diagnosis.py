"""What the DaMIL demo's input keeps of a lesion (issue 20, item 2): per abnormality type, how many voxels
a lesion has and how far it stands out from the brain around it after the demo's preprocessing
(HU window L35/W90, crop of the empty border, resize to the grid, z-score), at the demo's 64 x 64 x 32,
at 96 x 96 x 48 and at the paper's 160 x 160 x 80; and whether the report matrices (the training
labels) agree with the voxel truth intersected with the region map the model is given.

It reads the demo phantoms through the head-CT DataModule itself (validation and test splits: no
augmentation), so it measures exactly what the network sees.

    .venv/bin/python benchmarks/damil_phantom_diagnosis.py [--data-dir DIR] [--n-scans 160]
        [--sizes 64,64,32 96,96,48 160,160,80]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from _device import header
from scipy import ndimage


def measure(manifest: str, labels: str, size: list[int], cache: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from datamodules.crossdl.head_ct.datamodule import HeadCTDataModule

    dm = HeadCTDataModule(
        manifest,
        labels,
        spatial_size=size,
        cache_dir=str(cache),
        split={"seed": 0, "fractions": [0.6, 0.2, 0.2]},
        flip_probability=0.0,
        rotate_degrees=0.0,
    )
    dm.setup()
    types = dm.space.types
    lesions, cells = [], []
    for split in ("val", "test"):
        for item in dm.datasets[split]:
            image = item["image"][0].numpy()
            regions = item["region_mask"][0].numpy()
            voxels = item["voxel_mask"].numpy().astype(bool)  # (types, ...)
            brain = regions > 0
            for j, t in enumerate(types):
                labelled, n = ndimage.label(voxels[j])
                for k in range(1, n + 1):
                    blob = labelled == k
                    ring = ndimage.binary_dilation(blob, iterations=2) & ~blob & brain & ~voxels.any(0)
                    noise = image[ring].std() if ring.sum() > 5 else np.nan
                    lesions.append(
                        {
                            "type": t,
                            "voxels": int(blob.sum()),
                            # blob minus its 2-voxel ring, in the network's z-scored input units
                            "contrast_z": image[blob].mean() - image[ring].mean() if ring.any() else np.nan,
                            "contrast_sd": (image[blob].mean() - image[ring].mean()) / noise
                            if ring.any()
                            else np.nan,
                        }
                    )
                # label agreement: a cell is positive in the labels vs its region holds lesion voxels
                matrix = item["region_labels"][:, j].numpy()
                for r in range(len(dm.space.anatomical_regions)):
                    in_region = bool((voxels[j] & (regions == r + 1)).any())
                    cells.append({"type": t, "label": float(matrix[r]), "voxels_in_region": in_region})
    return pd.DataFrame(lesions), pd.DataFrame(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="a demo data_dir (default: a temporary one)"
    )
    parser.add_argument("--n-scans", type=int, default=160)
    parser.add_argument("--sizes", nargs="+", default=["64,64,32", "96,96,48", "160,160,80"])
    args = parser.parse_args()
    from datamodules.synthetic.datasets.ct_scans import demo_data_config

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="damil_diag_"))
    data = demo_data_config(data_dir, n_scans=args.n_scans, seed=0, register=False)
    print(
        header(
            "cpu",
            "float32 (the DataModule's preprocessing)",
            "data path only: runs on the CPU, no GPU memory used, also on a GPU machine",
        )
    )
    print(f"phantoms: {data['manifest_path']}")
    for size_text in args.sizes:
        size = [int(s) for s in size_text.split(",")]
        lesions, cells = measure(data["manifest_path"], data["labels_path"], size, data_dir / "ct_cache")
        print(
            f"\n## grid {'x'.join(map(str, size))}: {len(lesions)} lesions in the validation + test phantoms"
        )
        table = lesions.groupby("type").agg(
            lesions=("voxels", "size"),
            voxels_median=("voxels", "median"),
            voxels_p10=("voxels", lambda v: np.percentile(v, 10)),
            under_10_voxels=("voxels", lambda v: float((v < 10).mean())),
            contrast_z_median=("contrast_z", "median"),
            contrast_sd_median=("contrast_sd", "median"),
        )
        print(table.round(2).to_string())
        agree = cells.groupby("type").apply(
            lambda c: pd.Series(
                {
                    "positive_cells": int((c["label"] == 1).sum()),
                    "positive_without_voxels": int(((c["label"] == 1) & ~c["voxels_in_region"]).sum()),
                    "voxels_but_negative": int(((c["label"] == 0) & c["voxels_in_region"]).sum()),
                }
            ),
            include_groups=False,
        )
        print(agree.to_string())


if __name__ == "__main__":
    main()
