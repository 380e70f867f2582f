"""A negation-blind keyword rule: the floor any report classifier must clear.

Wood et al. 2021 (Discussion) argue that context-independent representations fail on reports that
"include descriptions, preceded by distant negation, of abnormalities which are not present". This
rule flags a report abnormal when any abnormality keyword occurs anywhere, negated or not; on the
synthetic corpus it falls clearly short of perfect, which shows the corpus needs context.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

ABNORMALITY_KEYWORDS: tuple[str, ...] = (
    "infarct",
    "ischaemi",
    "ischemi",
    "stroke",
    "mass",
    "tumour",
    "tumor",
    "lesion",
    "metastas",
    "meningioma",
    "glioma",
    "atrophy",
    "volume loss",
    "aneurysm",
    "malformation",
    "haemorrhage",
    "hemorrhage",
    "cavernoma",
    "small vessel",
    "white matter",
    "demyelinat",
    "sclerosis",
    "encephalomalacia",
    "gliosis",
    "craniotomy",
    "hydrocephalus",
    "chiari",
    "cyst",
)
_PATTERN = re.compile("|".join(re.escape(k) for k in ABNORMALITY_KEYWORDS), re.IGNORECASE)


def keyword_rule(texts: Iterable[str]) -> np.ndarray:
    """1 where any abnormality keyword occurs in the text (negation ignored), else 0."""
    return np.array([int(bool(_PATTERN.search(t))) for t in texts], dtype=np.int64)
