"""Lesion specifications: the single source of truth for synthetic head-CT data.

A :class:`ScanSpec` lists the lesions of one scan (abnormality type, regions, side, size, wording
family). The synthetic report generator (:mod:`datamodules.synthetic.text.ct_reports`) writes text from
it, and the synthetic CT phantoms (head-CT data issue) render the same lesions into voxels, so that
image, report and abnormality matrix always agree. :func:`abnormality_matrix` is the ground truth
both are scored against (Liu et al. 2023, STAR Methods: A_ij = 1 iff region i has abnormality j).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reportsup.contracts.labels.crossdl import PAIRED_REGIONS, LabelSpace

# What each wording family asserts (Table S5): "mixed density" is both hyper- and hypodense; a hematoma
# with surrounding edema is hyperdense with a hypodense rim.
FAMILY_TYPES: dict[str, tuple[str, ...]] = {
    "hematoma": ("intraparenchymal_hyperdensity",),
    "hematoma_with_edema": ("intraparenchymal_hyperdensity", "intraparenchymal_hypodensity"),
    "mixed_intra": ("intraparenchymal_hyperdensity", "intraparenchymal_hypodensity"),
    "edema": ("intraparenchymal_hypodensity",),
    "softening": ("intraparenchymal_hypodensity",),
    "subdural_hematoma": ("extraparenchymal_hyperdensity",),
    "epidural_hematoma": ("extraparenchymal_hyperdensity",),
    "subarachnoid": ("extraparenchymal_hyperdensity",),
    "intraventricular": ("extraparenchymal_hyperdensity",),
    "mixed_extra": ("extraparenchymal_hyperdensity", "extraparenchymal_hypodensity"),
    "effusion": ("extraparenchymal_hypodensity",),
}
INTRA_FAMILIES = ("hematoma", "hematoma_with_edema", "mixed_intra", "edema", "softening")
EXTRA_FAMILIES = ("subdural_hematoma", "epidural_hematoma", "subarachnoid", "mixed_extra", "effusion")
# Regions whose extraparenchymal space the lobes' definition includes (Table S4: "between these lobes
# and the cranial plate"); the lateral ventricle is extraparenchymal by definition (Table S5).
CONVEXITY_REGIONS = ("frontal_lobe", "parietal_lobe", "temporal_lobe", "occipital_lobe")
OTHER_LOCATIONS = ("cerebral falx", "third ventricle", "fourth ventricle", "lateral fissure cistern")
UNCLEAR_LOCATIONS = ("left hemisphere", "right hemisphere", "surgery area", "operative region")


@dataclass(frozen=True)
class Lesion:
    """One abnormality: a wording family (which fixes its types), where it is, and its size."""

    family: str
    regions: tuple[str, ...]  # region names of the label space (incl. "other"/"unclear")
    size_mm: float
    location_text: str | None = None  # for other/unclear: the words the report uses

    @property
    def types(self) -> tuple[str, ...]:
        return FAMILY_TYPES[self.family]


@dataclass
class ScanSpec:
    """Everything the synthetic data of one scan is generated from."""

    scan_id: str
    patient_id: str
    lesions: list[Lesion] = field(default_factory=list)
    post_operative: bool = False


def abnormality_matrix(spec: ScanSpec, space: LabelSpace) -> np.ndarray:
    """A in {0,1}^{regions x types} of the scan (paper: the abnormality matrix)."""
    a = np.zeros((len(space.regions), len(space.types)), dtype=np.int8)
    for lesion in spec.lesions:
        for region in lesion.regions:
            for t in lesion.types:
                a[space.regions.index(region), space.types.index(t)] = 1
    return a


# The default lesion population of the synthetic data (abnormal share, P(1, 2, 3 lesions), sizes in mm).
ABNORMAL_RATE = 0.6
LESION_COUNT_WEIGHTS = (0.6, 0.3, 0.1)
SIZE_RANGE_MM = (4, 60)


def _sample_lesion(rng: random.Random, size_range_mm: tuple[int, int] = SIZE_RANGE_MM) -> Lesion:
    kind = rng.random()
    if kind < 0.08:
        family = rng.choice(("hematoma", "edema", "subarachnoid", "mixed_extra"))
        return Lesion(family, ("other",), rng.randint(5, 30), rng.choice(OTHER_LOCATIONS))
    if kind < 0.13:
        family = rng.choice(("softening", "edema", "hematoma"))
        return Lesion(family, ("unclear",), rng.randint(10, 50), rng.choice(UNCLEAR_LOCATIONS))
    sides = rng.choices((("left",), ("right",), ("left", "right")), weights=(0.42, 0.42, 0.16))[0]
    if rng.random() < 0.55:
        family = rng.choice(INTRA_FAMILIES)
        base = rng.sample(
            (*PAIRED_REGIONS[:6], "cerebellum", "brain_stem"), k=rng.choices((1, 2), (0.7, 0.3))[0]
        )
    else:
        family = rng.choice((*EXTRA_FAMILIES, "intraventricular"))
        if family == "intraventricular":
            base = ["lateral_ventricle"]
        else:
            base = rng.sample(CONVEXITY_REGIONS, k=rng.choices((1, 2), (0.6, 0.4))[0])
    regions = []
    for b in base:
        if b == "brain_stem":
            regions.append(b)
        else:
            regions.extend(f"{s}_{b}" for s in sides)
    return Lesion(family, tuple(dict.fromkeys(regions)), float(rng.randint(*size_range_mm)))


def sample_scan_spec(
    scan_id: str,
    patient_id: str,
    rng: random.Random,
    abnormal_rate: float = ABNORMAL_RATE,
    lesion_count_weights: Sequence[float] = LESION_COUNT_WEIGHTS,
    size_range_mm: tuple[int, int] = SIZE_RANGE_MM,
) -> ScanSpec:
    """A scan with 0-3 lesions (about ``abnormal_rate`` of scans have at least one; 1, 2 or 3 with
    ``lesion_count_weights``; intra/extra-parenchymal sizes drawn from ``size_range_mm``)."""
    spec = ScanSpec(scan_id, patient_id, post_operative=rng.random() < 0.1)
    if rng.random() < abnormal_rate:
        n = rng.choices((1, 2, 3), weights=tuple(lesion_count_weights))[0]
        spec.lesions = [_sample_lesion(rng, tuple(size_range_mm)) for _ in range(n)]
    return spec
