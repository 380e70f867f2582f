"""MONAI batches as Lightning modules want them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai.data import MetaTensor


def plain_tensors(batch: Mapping[str, Any]) -> dict[str, Any]:
    """MONAI MetaTensors as plain tensors: metadata would otherwise ride along into every loss and
    logged metric (and into checkpoints, which then need MONAI classes to unpickle)."""
    return {k: v.as_tensor() if isinstance(v, MetaTensor) else v for k, v in batch.items()}
