"""Occlusion sensitivity maps for the fused spine radiographs (spine study, "Data Analysis", Figure 6).

A square patch (80 pixels in the paper, at 512 x 512) slides over the image; the drop of the finding's
output when a region is occluded is its importance (captum's ``Occlusion``: the output of the original
image minus that of the occluded one, averaged over the windows covering a pixel; high = important for a
positive prediction). The red (coronal) and blue (sagittal) channels are occluded separately, so the
importance of each projection is shown apart; the green channel is not occluded (it carries no view).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from captum.attr import Occlusion
from torch import nn

#: channels of the fused image that hold a view (R = coronal, B = sagittal)
VIEW_CHANNELS = {"coronal": 0, "sagittal": 2}


def occlusion_maps(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    patch: int = 80,
    stride: int = 20,
    baseline: Sequence[float] = (0.0, 0.0, 0.0),
    perturbations_per_eval: int = 32,
) -> dict[str, np.ndarray]:
    """``{"coronal": (H, W), "sagittal": (H, W)}`` occlusion importance of output ``target`` for one fused
    image ``(3, H, W)`` (as the model sees it, i.e. normalised). ``baseline``: the per-channel value an
    occluded pixel takes (the normalised value of black)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"occlusion_maps expects one fused image (3, H, W); got {tuple(image.shape)}.")
    views = image[[VIEW_CHANNELS["coronal"], VIEW_CHANNELS["sagittal"]]].unsqueeze(0)
    green = image[1]

    def forward(two_views: torch.Tensor) -> torch.Tensor:
        g = green.expand(two_views.shape[0], *green.shape)
        return model(torch.stack([two_views[:, 0], g, two_views[:, 1]], dim=1))

    base = torch.tensor(
        [baseline[VIEW_CHANNELS["coronal"]], baseline[VIEW_CHANNELS["sagittal"]]], dtype=image.dtype
    )
    base = base.view(1, 2, 1, 1).expand_as(views).contiguous()
    with torch.no_grad():
        attr = Occlusion(forward).attribute(
            views,
            sliding_window_shapes=(1, patch, patch),  # one channel at a time: coronal and sagittal apart
            strides=(1, stride, stride),
            target=target,
            baselines=base,
            perturbations_per_eval=perturbations_per_eval,
        )
    return {"coronal": attr[0, 0].cpu().numpy(), "sagittal": attr[0, 1].cpu().numpy()}
