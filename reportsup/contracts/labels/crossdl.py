"""Cross-DL label space (Liu et al. 2023, Cell Rep Med; STAR Methods "Abnormality annotation definition",
Tables S4 and S5): an abnormality matrix A in {0,1}^{(N+2) x M}.

* N = 17 anatomical regions: frontal, parietal, temporal and occipital lobe, centrum ovale, basal
  ganglia, lateral ventricle and cerebellum, each left and right, plus the brain stem;
* 2 extra region labels: ``other`` (intracranial regions outside the 17, e.g. "cerebral falx",
  "third ventricle") and ``unclear`` (vague locations, e.g. "left hemisphere", "surgery area");
* M = 4 abnormality types: intra-/extraparenchymal hyper-/hypodensity.

The left/right pairing is declared here once (:data:`SIDE_PAIRS`) and every flip uses
:meth:`LabelSpace.flip_permutation`: the discretizer's text augmentation now, the CT augmentation
later. A :class:`LabelSpace` can be built from configuration (``data.label_space``) for other
region/type sets; the default is exactly the paper's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

PAIRED_REGIONS: tuple[str, ...] = (
    "frontal_lobe",
    "parietal_lobe",
    "temporal_lobe",
    "occipital_lobe",
    "centrum_ovale",
    "basal_ganglia",
    "lateral_ventricle",
    "cerebellum",
)
ANATOMICAL_REGIONS: tuple[str, ...] = (
    *(f"{side}_{r}" for r in PAIRED_REGIONS for side in ("left", "right")),
    "brain_stem",
)
OTHER_REGION = "other"
UNCLEAR_REGION = "unclear"
REGIONS: tuple[str, ...] = (*ANATOMICAL_REGIONS, OTHER_REGION, UNCLEAR_REGION)
TYPES: tuple[str, ...] = (
    "intraparenchymal_hyperdensity",
    "extraparenchymal_hyperdensity",
    "intraparenchymal_hypodensity",
    "extraparenchymal_hypodensity",
)
SIDE_PAIRS: dict[str, str] = {f"left_{r}": f"right_{r}" for r in PAIRED_REGIONS}


@dataclass(frozen=True)
class LabelSpace:
    """Regions (rows of A), types (columns of A) and which regions mirror each other."""

    regions: tuple[str, ...] = REGIONS
    types: tuple[str, ...] = TYPES
    side_pairs: Mapping[str, str] = field(default_factory=lambda: dict(SIDE_PAIRS))
    other: str = OTHER_REGION
    unclear: str = UNCLEAR_REGION

    def __post_init__(self) -> None:
        for a, b in self.side_pairs.items():
            if a not in self.regions or b not in self.regions:
                raise ValueError(
                    f"label_space.side_pairs: {a!r} <-> {b!r} names a region not in regions {self.regions}."
                )
        for name in (self.other, self.unclear):
            if name not in self.regions:
                raise ValueError(f"label_space: region {name!r} (other/unclear) is not in regions.")
        dup = {r for r in (*self.regions, *self.types) if (*self.regions, *self.types).count(r) > 1}
        if dup:
            raise ValueError(
                f"label_space: names {sorted(dup)} appear twice; region and type names must be unique."
            )

    @classmethod
    def from_config(
        cls,
        regions: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        side_pairs: Mapping[str, str] | None = None,
        other: str = OTHER_REGION,
        unclear: str = UNCLEAR_REGION,
    ) -> LabelSpace:
        return cls(
            tuple(regions or REGIONS),
            tuple(types or TYPES),
            dict(SIDE_PAIRS if side_pairs is None else side_pairs),
            other,
            unclear,
        )

    @property
    def anatomical_regions(self) -> tuple[str, ...]:
        """The N regions with a place in the atlas (all but ``other`` and ``unclear``)."""
        return tuple(r for r in self.regions if r not in (self.other, self.unclear))

    def flip_permutation(self) -> np.ndarray:
        """Index array p with ``flipped[i] = original[p[i]]``: each paired region takes its mirror's value."""
        mirror = {**self.side_pairs, **{b: a for a, b in self.side_pairs.items()}}
        index = {r: i for i, r in enumerate(self.regions)}
        return np.array([index[mirror.get(r, r)] for r in self.regions], dtype=np.int64)

    def matrix_columns(self) -> list[str]:
        """Flat column names of A in row-major order: ``<region>__<type>``."""
        return [f"{r}__{t}" for r in self.regions for t in self.types]

    def merged_region_names(self) -> dict[str, list[str]]:
        """Left/right pairs merged for region summaries (paper Fig. 2D): ``frontal_lobe: [left_..., right_...]``."""
        merged: dict[str, list[str]] = {}
        for r in self.anatomical_regions:
            key = r
            for a, b in self.side_pairs.items():
                if r in (a, b):
                    key = _common_suffix(a, b)
            merged.setdefault(key, []).append(r)
        return merged


def _common_suffix(a: str, b: str) -> str:
    for prefix in ("left_", "right_"):
        a, b = a.removeprefix(prefix), b.removeprefix(prefix)
    return a if a == b else f"{a}|{b}"


def report_matrices(
    report_index: np.ndarray,
    region_probs: np.ndarray,
    type_probs: np.ndarray,
    n_reports: int,
    threshold: float | np.ndarray | None = 0.5,
) -> np.ndarray:
    """Merge sentence predictions into one abnormality matrix per report (paper: ``A = max_s r_s t_s^T``).

    With ``threshold`` the sentence vectors are binarised first (the pseudo-label path: ``prob >=
    threshold``; one number, or one per label, regions then types, as thresholds chosen on validation
    are); with ``threshold=None`` the same max-merge of probabilities gives the soft matrix used for ROC
    analysis.
    ``report_index[s]`` is the report (0..n_reports-1) of sentence s; a report without sentences gets zeros.
    """
    r = np.asarray(region_probs, dtype=np.float32)
    t = np.asarray(type_probs, dtype=np.float32)
    if threshold is not None:
        th = np.broadcast_to(np.asarray(threshold, dtype=np.float32), (r.shape[1] + t.shape[1],))
        r = (r >= th[: r.shape[1]]).astype(np.float32)
        t = (t >= th[r.shape[1] :]).astype(np.float32)
    out = np.zeros((n_reports, r.shape[1], t.shape[1]), dtype=np.float32)
    np.maximum.at(out, np.asarray(report_index, dtype=np.int64), r[:, :, None] * t[:, None, :])
    return out
