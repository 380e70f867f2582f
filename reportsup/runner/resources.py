"""What a head-CT run will need before anything is cached: cache disk, host RAM, accelerator memory.

* cache disk: one preprocessed item per scan (float32 image + uint8 region map + M uint8 voxel-mask
  channels at the configured size) plus the pickle overhead measured on MONAI's cache files (~4 KiB);
* host RAM: data-loader workers each decode one raw scan (int16 pixels + float32 copies made by
  loading, orientation, windowing and resizing: ~18 bytes per raw voxel) and hold prefetched batches;
  caching in memory (CacheDataset) adds the whole cache;
* accelerator memory for training: parameters, gradients and Adam moments (16 bytes per parameter)
  plus every module output kept for the backward pass, counted by running the network once on
  PyTorch's ``meta`` device (no memory is allocated, any input size works on any machine), at the
  configured size, batch and precision. This is a lower bound: allocator fragmentation and cuDNN
  workspaces typically add 10-30 %.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

CACHE_OVERHEAD_BYTES = 4096
RAW_DECODE_BYTES_PER_VOXEL = 18
ADAM_BYTES_PER_PARAMETER = 16  # fp32 weight + gradient + two moments


@dataclass
class ResourceEstimate:
    n_scans: int
    cache_disk_bytes: int
    host_ram_bytes: int
    accelerator_bytes: int | None
    accelerator_note: str

    def as_dict(self) -> dict:
        d = asdict(self)
        for key in ("cache_disk_bytes", "host_ram_bytes", "accelerator_bytes"):
            if d[key] is not None:
                d[key.replace("_bytes", "_gib")] = round(d[key] / 2**30, 3)
        return d


def cached_item_bytes(spatial_size: Sequence[int], n_types: int, region_mask: bool, voxel_mask: bool) -> int:
    voxels = int(np.prod(spatial_size))
    return voxels * (4 + (1 if region_mask else 0) + (n_types if voxel_mask else 0)) + CACHE_OVERHEAD_BYTES


def activation_bytes(
    model: nn.Module, input_shape: Sequence[int], bytes_per_value: int = 4
) -> tuple[int, int]:
    """(activation bytes kept for backward, parameter count) from one forward pass on the meta device."""
    total = 0

    def hook(_module, _inputs, output) -> None:
        nonlocal total
        for t in output if isinstance(output, (tuple, list)) else [output]:
            if torch.is_tensor(t):
                total += t.numel() * bytes_per_value

    meta = model.to("meta")
    handles = [m.register_forward_hook(hook) for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            meta(torch.empty(*input_shape, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total, sum(p.numel() for p in meta.parameters())


def training_memory_bytes(model: nn.Module, input_shape: Sequence[int], bytes_per_value: int = 4) -> int:
    acts, params = activation_bytes(model, input_shape, bytes_per_value)
    return acts + params * ADAM_BYTES_PER_PARAMETER


def estimate_resources(
    raw_voxels: Sequence[int],
    spatial_size: Sequence[int],
    n_types: int,
    region_mask: bool,
    voxel_mask: bool,
    batch_size: int = 1,
    num_workers: int = 0,
    prefetch_factor: int = 2,
    cache_in_memory: bool = False,
    model: nn.Module | None = None,
    bytes_per_value: int = 4,
    model_name: str = "",
) -> ResourceEstimate:
    """Estimate for ``len(raw_voxels)`` scans (raw voxel counts from their headers)."""
    item = cached_item_bytes(spatial_size, n_types, region_mask, voxel_mask)
    n = len(raw_voxels)
    decode = (max(raw_voxels) if n else 0) * RAW_DECODE_BYTES_PER_VOXEL
    workers = max(1, num_workers)
    ram = workers * (decode + prefetch_factor * batch_size * item) + (n * item if cache_in_memory else 0)
    if model is None:
        acc, note = None, "no network given"
    else:
        acc = training_memory_bytes(model, (batch_size, 1, *spatial_size), bytes_per_value)
        note = (
            f"{model_name or type(model).__name__}, batch {batch_size}, input {tuple(spatial_size)}, "
            f"{bytes_per_value * 8}-bit activations; lower bound (+10-30 % allocator/cuDNN overhead)"
        )
    return ResourceEstimate(n, n * item, ram, acc, note)
