"""A small CQ500-layout folder of synthetic head-CT phantoms with a CQ500-style ``reads.csv``, to run
``experiment=damil_cq500`` (Liu et al. 2023, Figure 6) without the real data.

Layout, as the CQ500 download unpacks (Chilamkurthy et al. 2018)::

    CQ500CT<n> CQ500CT<n>/Unknown Study/CT 5mm/*.dcm     the phantom (soft-tissue series)
    CQ500CT<n> CQ500CT<n>/Unknown Study/CT BONE/*.dcm    (``extra_series``) the same volume, a bone series
    CQ500CT<n> CQ500CT<n>/Unknown Study/CT 1mm/*.dcm     (``extra_series``) a thin series (1 mm headers)
    reads.csv     name, Category, R1:<14 findings>, R2:..., R3:... (CQ500's columns)

The readers' marks follow each phantom's lesions (:class:`~datamodules.synthetic.lesion_spec.ScanSpec`):
ICH = any hyperdense lesion; IPH = an intraparenchymal hyperdense one; SDH / EDH / SAH / IVH by wording
family (``mixed_extra`` counts as SDH); BleedLocation-Left / -Right = a hyperdense lesion in a ``left_*``
/ ``right_*`` region. Readers 1 and 2 mark the truth; reader 3 flips every finding of every other scan, so
only the majority (2 of 3) recovers the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from datamodules.crossdl.head_ct.cq500 import READ_FINDINGS, READERS
from datamodules.crossdl.head_ct.dicom_series import write_dicom_series
from datamodules.synthetic.images.head_phantom import DEFAULT_SHAPE, DEFAULT_SPACING, render_phantom
from datamodules.synthetic.lesion_spec import Lesion, ScanSpec

HYPERDENSE = ("intraparenchymal_hyperdensity", "extraparenchymal_hyperdensity")
#: CQ500 finding of each extraparenchymal hyperdense wording family
EXTRA_FINDING = {
    "subdural_hematoma": "SDH",
    "mixed_extra": "SDH",
    "epidural_hematoma": "EDH",
    "subarachnoid": "SAH",
    "intraventricular": "IVH",
}
#: a default set of scans in which every Figure 6 label has positives and negatives
DEFAULT_LESIONS: tuple[tuple[Lesion, ...], ...] = (
    (),
    (Lesion("hematoma", ("left_basal_ganglia",), 30.0),),
    (Lesion("subdural_hematoma", ("right_frontal_lobe", "right_parietal_lobe"), 40.0),),
    (Lesion("edema", ("left_frontal_lobe",), 30.0),),  # hypodense only: no haemorrhage
    (
        Lesion("hematoma", ("right_temporal_lobe",), 30.0),
        Lesion("epidural_hematoma", ("left_parietal_lobe",), 35.0),
    ),
    (),
    (Lesion("intraventricular", ("left_lateral_ventricle", "right_lateral_ventricle"), 20.0),),
    (Lesion("hematoma", ("right_centrum_ovale",), 30.0),),
)


def reader_findings(spec: ScanSpec) -> dict[str, int]:
    """The 14 CQ500 findings (0/1) a reader who sees the truth of ``spec`` marks."""
    marks = dict.fromkeys(READ_FINDINGS, 0)
    for lesion in spec.lesions:
        if not set(lesion.types) & set(HYPERDENSE):
            continue
        marks["ICH"] = 1
        if "intraparenchymal_hyperdensity" in lesion.types:
            marks["IPH"] = 1
        if "extraparenchymal_hyperdensity" in lesion.types:
            marks[EXTRA_FINDING[lesion.family]] = 1
        for side, finding in (("left_", "BleedLocation-Left"), ("right_", "BleedLocation-Right")):
            if any(r.startswith(side) for r in lesion.regions):
                marks[finding] = 1
    return marks


def write_cq500_phantoms(
    out_dir: str | Path,
    lesions: Sequence[Sequence[Lesion]] = DEFAULT_LESIONS,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    extra_series: bool = True,
) -> Path:
    """Write one phantom per entry of ``lesions`` (scan ``CQ500-CT-<i>``) and ``reads.csv`` into
    ``out_dir`` (module docstring); returns ``out_dir``."""
    out = Path(out_dir)
    shape, spacing = tuple(int(s) for s in shape), tuple(float(s) for s in spacing)
    rows = []
    for i, scan_lesions in enumerate(lesions):
        name = f"CQ500-CT-{i}"
        spec = ScanSpec(name, name, list(scan_lesions))
        ph = render_phantom(spec, seed=seed * 1000 + i, shape=shape, spacing=spacing)
        study = out / f"CQ500CT{i} CQ500CT{i}" / "Unknown Study"
        series = [("CT 5mm", ph.spacing)]
        if extra_series:  # what the series choice must pass over: a bone reconstruction, a thin one
            series += [("CT BONE", ph.spacing), ("CT 1mm", (*ph.spacing[:2], 1.0))]
        for description, series_spacing in series:
            write_dicom_series(
                ph.hu,
                series_spacing,
                study / description,
                patient_id=name,
                series_description=description,
                origin=ph.origin_lps,
                seed_uid=f"reportsup-cq500-{seed}-{i}-{description}",
            )
        truth = reader_findings(spec)
        row: dict[str, object] = {"name": name, "Category": "B1"}
        for reader in READERS:
            flip = reader == "R3" and i % 2 == 1
            row.update({f"{reader}:{f}": (1 - v if flip else v) for f, v in truth.items()})
        rows.append(row)
    pd.DataFrame(rows).to_csv(out / "reads.csv", index=False)
    return out
