"""The two DaMIL loss variants' values for every point the paper leaves open (Liu et al. 2023, "Image
analyzer architecture and training"; released code ``liuaohanjsj/Cross-DL`` @ de18ac4, ``version = 85``
of ``scripts/train_mil_multitask.py``, losses in ``unet3d/metrics.py`` and ``unet3d/model/mil_multitask.py``).

``paper`` is our reading of the paper, with our choice and its reason where the paper is silent
(``configs/model/damil.yaml`` says why for each); ``released_code`` is what version 85 does.

:func:`resolve` gives the values a run uses: options passed as ``None`` take the variant's value, and
under ``variant=released_code`` an option that still holds the paper's value (the model config's
default) takes the released code's value, so ``model.variant=released_code`` alone reproduces the
released code; the switched options are returned so the caller can log them. An option set to any
other value is kept (a deliberate change). :class:`~lightning_modules.crossdl.damil.losses.DaMILLoss`
switches nothing (``switch_paper_values=False``): its explicit arguments are used as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

VARIANTS = ("paper", "released_code")

#: option -> value per variant (the model config's defaults are the ``paper`` column)
VARIANT_VALUES: dict[str, dict[str, Any]] = {
    "paper": {
        "alpha": 0.1,  # paper: alpha = 0.1
        "region_weight": 1.0,  # paper: lambda L_s + L_ra + alpha L_sa
        "eps": 1e-3,  # ours: caps w at 31.6 (f = 0); see configs/model/damil.yaml
        "dice_smooth": 1e-5,  # ours: MONAI's default
        "coarse_target": "nearest",  # ours: disjoint regions, as the atlas's
        "min_region_sum": 0.0,  # paper: every region is a bag
        "k_grid": "coarse",  # paper: k counted "in the former scale", used as counted
        "k_scale": 1.0,
        "k_min": 1,  # ours: k = 0 -> max pooling
        "scan_loss_scales": "finest",  # paper: one scan prediction, the final (finest) map's maximum
        "mask_scan_loss_for_unclear": True,  # ours: an unclear location can still hide a type
        "detach_region_maps": True,  # ours: measured, see docs/components/damil.md
        "scheduler": "halving",  # paper: lr halved every epoch from the 3rd
    },
    "released_code": {
        "alpha": 0.02,  # mil_w_coarse
        "region_weight": 0.2,  # mil_w
        "eps": 1e-8,  # np.minimum(1 - 1e-8, f + 1e-8)
        "dice_smooth": 1.0,  # dice_coefficient(smooth=1.)
        "coarse_target": "max_pool",  # organ_segmentation_loss_ms: MaxPooling3D(2) of the fine target
        "min_region_sum": 0.1,  # MIL_loss: blank = K.less(K.sum(current_layer), 0.1)
        "k_grid": "fine",  # MIL_loss_ms: max(8 c, 8) / 2, i.e. 8 fine voxels per coarse one, halved
        "k_scale": 0.5,
        "k_min": 4,
        "scan_loss_scales": "mean",  # mil_loss_coarse at both scales, l /= scale
        "mask_scan_loss_for_unclear": False,  # mil_loss_image has no unclear mask
        "detach_region_maps": False,  # version 85: MIL_loss_ms(stop_gradient=False)
        "scheduler": "plateau",  # ReduceLROnPlateau(factor 0.5, patience 2)
    },
}

CHOICES = {
    "coarse_target": ("nearest", "max_pool"),
    "k_grid": ("coarse", "fine"),
    "scan_loss_scales": ("finest", "mean"),
    "scheduler": ("halving", "plateau"),
}


def resolve(
    variant: str, given: Mapping[str, Any], switch_paper_values: bool = True
) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """(values to use, {option: (given, used)} for the options switched to the released code's value);
    ``switch_paper_values=False``: only missing options take the variant's value."""
    if variant not in VARIANTS:
        raise ValueError(f"model.variant={variant!r}; choose one of {VARIANTS}.")
    unknown = set(given) - set(VARIANT_VALUES[variant])
    if unknown:
        raise ValueError(
            f"not a DaMIL variant option: {sorted(unknown)}; known: {sorted(VARIANT_VALUES[variant])}"
        )
    used: dict[str, Any] = {}
    switched: dict[str, tuple[Any, Any]] = {}
    for key, own in VARIANT_VALUES[variant].items():
        value = given.get(key)
        if value is None:
            value = own
        elif (
            switch_paper_values
            and variant == "released_code"
            and value == VARIANT_VALUES["paper"][key] != own
        ):
            switched[key] = (value, own)
            value = own
        if key in CHOICES and value not in CHOICES[key]:
            raise ValueError(f"model.{key}={value!r}; choose one of {CHOICES[key]}.")
        used[key] = value
    return used, switched
