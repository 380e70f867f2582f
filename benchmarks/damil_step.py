"""One DaMIL training step at the paper's full input size (160 x 160 x 80, batch 1): wall time and peak
memory, fp32 with and without gradient checkpointing and under bf16 autocast (Lightning's
``bf16-mixed``; on CPUs with AMX, oneDNN runs the convolutions in bf16), on CPU (and on the GPU when
there is one).

Each configuration runs in a fresh subprocess, so that the peak resident memory (CPU) or the peak
allocated memory (CUDA) belongs to that configuration alone; the script prints both and their ratios.

    .venv/bin/python benchmarks/damil_step.py [--size 160 160 80] [--steps 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _device import header, peak_gib, pick_device


def build_module(device: str, checkpointing: bool = False, seed: int = 0):
    """The default :class:`DaMILModule` (paper variant, default network) on ``device``, seeded, with
    unit positive weights (the training split's rates are not known here)."""
    import torch

    from lightning_modules.crossdl.damil.module import DaMILModule

    torch.manual_seed(seed)
    module = DaMILModule(network={"gradient_checkpointing": checkpointing}).to(device)
    module.criterion.pos_weight.copy_(torch.ones_like(module.criterion.pos_weight))
    return module


def synthetic_batch(n_regions: int, size: list[int], device: str, seed: int = 0) -> dict:
    """One random scan (batch 1) with an atlas region map, region x type labels and scan labels."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    batch = {
        "image": torch.randn(1, 1, *size, generator=gen),
        "region_mask": torch.randint(0, n_regions + 1, (1, 1, *size), generator=gen),
        "region_labels": (torch.rand(1, n_regions, 4, generator=gen) > 0.9).float(),
        "scan_labels": torch.ones(1, 4),
        "unclear": torch.zeros(1, dtype=torch.bool),
    }
    return {k: v.to(device) for k, v in batch.items()}


def full_step(module, opt, batch: dict, device: str, bf16: bool = False) -> float:
    """One DaMIL training step as :meth:`DaMILModule.training_step` computes its loss (network, heads,
    Dice, region and scan MIL), backward and the optimizer step; returns its wall time in seconds."""
    import torch

    start = time.perf_counter()
    opt.zero_grad()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        losses, _ = module._losses(batch)
    losses["loss"].backward()
    opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def one_config(size: list[int], steps: int, checkpointing: bool, device: str, bf16: bool = False) -> dict:
    import numpy as np
    import torch

    module = build_module(device, checkpointing)
    opt = torch.optim.Adam(module.parameters(), lr=5e-4)
    batch = synthetic_batch(module.n_regions, size, device)
    times = [full_step(module, opt, batch, device, bf16) for _ in range(steps)]
    # CUDA: torch.cuda.max_memory_allocated; CPU: the process's peak resident memory
    return {"step_s": float(np.min(times[1:] if len(times) > 1 else times)), "peak_gib": peak_gib(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=3, default=[160, 160, 80])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument(
        "--device", default="all", help="all (the CPU, then the GPU if present), auto, cpu or cuda"
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("CHECKPOINTING", "DEVICE", "BF16"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        ckpt, device, bf16 = args.child
        print(json.dumps(one_config(args.size, args.steps, ckpt == "1", device, bf16 == "1")))
        return
    import torch

    devices = (
        ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        if args.device == "all"
        else [pick_device(args.device)]
    )
    for device in devices:
        print(
            header(device, "fp32, fp32 + gradient checkpointing, bf16 autocast (each in its own process)"),
            flush=True,
        )
        results = {}
        for ckpt, bf16 in (("0", "0"), ("1", "0"), ("0", "1")):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--size",
                    *map(str, args.size),
                    "--steps",
                    str(args.steps),
                    "--child",
                    ckpt,
                    device,
                    bf16,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            results[ckpt + bf16] = json.loads(out.stdout.strip().splitlines()[-1])
        plain, ckpt, bf16 = results["00"], results["10"], results["01"]
        memory = "peak GPU memory (max_memory_allocated)" if device == "cuda" else "peak = process peak RSS"
        print(
            f"{device}: one training step, input {tuple(args.size)}, batch 1, DaMIL default network; {memory}"
        )
        print(f"  fp32 plain             : {plain['step_s']:7.2f} s/step, peak {plain['peak_gib']:.2f} GiB")
        print(f"  gradient checkpointing : {ckpt['step_s']:7.2f} s/step, peak {ckpt['peak_gib']:.2f} GiB")
        print(f"  bf16 autocast          : {bf16['step_s']:7.2f} s/step, peak {bf16['peak_gib']:.2f} GiB")
        print(
            f"  ratio checkpointing/plain: time {ckpt['step_s'] / plain['step_s']:.2f}x, "
            f"memory {ckpt['peak_gib'] / plain['peak_gib']:.2f}x"
        )
        print(
            f"  ratio bf16/fp32: time {bf16['step_s'] / plain['step_s']:.2f}x, "
            f"memory {bf16['peak_gib'] / plain['peak_gib']:.2f}x"
        )


if __name__ == "__main__":
    main()
