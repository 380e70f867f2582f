"""Per-epoch schedules of DaMIL training (Liu et al. 2023, "Image analyzer architecture and training").

* segmentation weight lambda: "initialized as 1, and reduced by half every epoch until reaching the
  minimum value of 0.01": ``lambda_e = max(1 * 0.5**e, 0.01)`` for the 0-based epoch e;
* learning rate: Adam 5e-4 "decayed by half every epoch since the 3rd epoch". The paper does not say
  whether the 3rd epoch already runs at half the rate. Default (``halve_in_start_epoch=True``): it does,
  i.e. epochs 1-2 at 5e-4, epoch 3 at 2.5e-4, epoch 4 at 1.25e-4; with ``False`` epoch 3 still runs at
  5e-4 and the halving starts with epoch 4.
"""

from __future__ import annotations

import torch


def segmentation_weight(epoch: int, start: float = 1.0, decay: float = 0.5, minimum: float = 0.01) -> float:
    """lambda for the 0-based ``epoch``."""
    return max(start * decay**epoch, minimum)


def lr_factor(
    epoch: int, start_epoch: int = 3, factor: float = 0.5, halve_in_start_epoch: bool = True
) -> float:
    """Multiplier of the initial learning rate for the 0-based ``epoch`` (``start_epoch`` is 1-based)."""
    one_based = epoch + 1
    n_halvings = one_based - start_epoch + (1 if halve_in_start_epoch else 0)
    return factor ** max(0, n_halvings)


def halving_scheduler(
    optimizer: torch.optim.Optimizer, start_epoch: int = 3, halve_in_start_epoch: bool = True
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch LambdaLR with :func:`lr_factor` (step it once per epoch)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_factor(epoch, start_epoch, 0.5, halve_in_start_epoch)
    )
