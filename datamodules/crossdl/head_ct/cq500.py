"""Scan-level labels from the public CQ500 head-CT data set (Chilamkurthy et al. 2018, ``reads.csv``),
mapped to the Cross-DL abnormality types, for users who evaluate a DaMIL model on CQ500 as the paper did
(Liu et al. 2023, external evaluation).

``reads.csv`` has one row per scan (``name``, e.g. ``CQ500-CT-0``) and, per reader R1-R3, 0/1 columns
such as ``R1:ICH``, ``R1:IPH``, ``R1:IVH``, ``R1:SDH``, ``R1:EDH``, ``R1:SAH``. A finding is positive
when the majority of readers (2 of 3) mark it. Mapping (Table S5 definitions):

* intraparenchymal hyperdensity <- IPH (intraparenchymal haemorrhage);
* extraparenchymal hyperdensity <- IVH, SDH, EDH or SAH (intraventricular, subdural, epidural,
  subarachnoid: outside the parenchyma, in a ventricle or under the cranial plate);
* the two hypodensity types have no CQ500 label: their columns are left empty (unknown), not 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reportsup.contracts.labels.crossdl import TYPES

CQ500_TO_TYPE = {
    "intraparenchymal_hyperdensity": ("IPH",),
    "extraparenchymal_hyperdensity": ("IVH", "SDH", "EDH", "SAH"),
}
READERS = ("R1", "R2", "R3")


def majority(reads: pd.DataFrame, finding: str) -> pd.Series:
    """1 where at least 2 of the 3 readers marked ``finding``."""
    columns = [f"{r}:{finding}" for r in READERS]
    missing = [c for c in columns if c not in reads.columns]
    if missing:
        raise ValueError(f"reads.csv: missing column(s) {missing}; is this the CQ500 reads.csv?")
    return (reads[columns].astype(int).sum(axis=1) >= 2).astype(int)


def cq500_scan_labels(reads_csv: str | Path) -> pd.DataFrame:
    """``scan_id`` + ``scan__<type>`` columns (NaN for the types CQ500 does not label)."""
    reads = pd.read_csv(reads_csv)
    if "name" not in reads.columns:
        raise ValueError(f"{reads_csv}: no 'name' column; is this the CQ500 reads.csv?")
    out = pd.DataFrame({"scan_id": reads["name"].astype(str)})
    for t in TYPES:
        findings = CQ500_TO_TYPE.get(t)
        if findings is None:
            out[f"scan__{t}"] = np.nan
        else:
            out[f"scan__{t}"] = np.max([majority(reads, f) for f in findings], axis=0)
    return out
