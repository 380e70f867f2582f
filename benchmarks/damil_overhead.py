"""DaMIL: the full training step against the bare U-Net it is built on (issue 23 item 4), in one process.

* **full**: what :meth:`DaMILModule.training_step` computes (``DaMILModule._losses``: network, the K = 2
  output heads, Dice at both scales, dynamic multi-scale region MIL, scan-level MIL), backward and Adam
  (:func:`damil_step.full_step`);
* **bare**: the same U-Net without heads or losses, i.e. a copy of the module's own backbone
  (:class:`~lightning_modules.crossdl.damil.network.DaMILBackbone`: the same MONAI ``Convolution`` /
  ``UpSample`` blocks and widths, the same initial weights), forward, a trivial loss (the sum of the
  means of the K decoder outputs the heads would read), backward and its own Adam.

Our network does not wrap a MONAI U-Net class (``monai.networks.nets.BasicUNet`` / ``UNet`` differ in
widths, downsampling and output resolution; see network.py), so "a bare MONAI U-Net of the same widths"
is our backbone itself, built from MONAI blocks. The two alternate ``--rounds`` times (the order flips
every round) after one warm-up step each, so that the noise of a shared machine hits both; the table
gives the best and the median of each and the overhead ``full / bare - 1``. ``--dtype bf16`` runs both
under ``torch.autocast(dtype=torch.bfloat16)`` as Lightning's ``bf16-mixed`` does.

``--profile`` also prints what the heads and losses add, part by part: each part's forward + backward
timed on its own (on detached copies of the decoder features / maps, best of ``--profile-repeats``),
the k that the step's dynamic top-k uses and the cost of the top-k pooling as a function of k;
``--operators`` adds the PyTorch profiler's operators whose self time grows from the bare step to the
full one; ``--rounds 0`` prints only the profile.

    .venv/bin/python benchmarks/damil_overhead.py                      # 160 x 160 x 80, fp32 and bf16
    .venv/bin/python benchmarks/damil_overhead.py --size 32 32 16 --rounds 2 --profile --operators
    .venv/bin/python benchmarks/damil_overhead.py --device cuda        # on a GPU (CUDA time, peak memory)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from _device import header, peak_memory, pick_device, reset_peak
from damil_step import build_module, full_step, synthetic_batch
from monai.losses import DiceLoss

from lightning_modules.crossdl.damil.losses import (
    downsample_labels,
    region_mil_loss,
    region_one_hot,
    scan_mil_loss,
    segmentation_loss,
)
from lightning_modules.crossdl.damil.pooling import (
    k_factor,
    max_mil_pooling,
    scan_predictions,
    topk_counts,
    topk_mil_pooling,
)


def bare_step(backbone, opt, image: torch.Tensor, n_scales: int, device: str, bf16: bool = False) -> float:
    """Forward of the bare U-Net, a trivial loss (the sum of the means of the last ``n_scales`` decoder
    outputs), backward and the optimizer step; wall seconds."""
    start = time.perf_counter()
    opt.zero_grad()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        features = backbone(image)[-n_scales:]
        loss = sum(f.float().mean() for f in features)
    loss.backward()
    opt.step()
    sync(device)
    return time.perf_counter() - start


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def alternate(steps: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """One warm-up call of each, then ``rounds`` rounds of every step, the order flipped every round."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(steps[name]())
    return times


# --------------------------------------------------------------------------------------------- profile
def best_time(fn: Callable[[], object], device: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def part_times(module, batch: dict, device: str, bf16: bool, repeats: int) -> tuple[list, torch.Tensor]:
    """Each part the heads and losses add, timed alone (forward + backward where it has a gradient) on
    leaf copies of its inputs, so that what flows back into the network is cut off; and the k of the
    fine-scale top-k. The parts follow :class:`DaMILLoss` (paper variant); "all losses" is the loss
    itself, the parts only say where its time goes."""
    net, crit = module.net, module.criterion
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        features = [f.detach() for f in net.backbone(batch["image"])[-net.n_scales :]]
        maps = [(s.detach(), d.detach()) for s, d in net(batch["image"])]
    feats = [leaf(f) for f in features]
    outs = [(leaf(s), leaf(d)) for s, d in maps]
    region_map, labels, scan_labels = (
        batch["region_mask"],
        batch["region_labels"].float(),
        batch["scan_labels"],
    )
    n = module.n_regions
    shapes = [s.shape[2:] for s, _ in outs]
    (s0, d0), (s1, d1) = outs[0], outs[-1]
    factor = k_factor(crit.k_grid, crit.k_scale, tuple(d1.shape[2:]), tuple(d0.shape[2:]))
    k = topk_counts(s0.detach(), d0.detach(), crit.threshold, factor, crit.k_min)
    resampled = [downsample_labels(region_map, shape) for shape in shapes]
    targets = [region_one_hot(r, n) for r in resampled]
    dice = DiceLoss(
        include_background=True,
        sigmoid=False,
        reduction="none",
        smooth_nr=crit.dice_smooth,
        smooth_dr=crit.dice_smooth,
    )

    def heads() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            pairs = [head(f) for head, f in zip(net.heads, feats, strict=True)]
        sum(s.mean() + d.mean() for s, d in pairs).backward()

    def whole_loss() -> None:
        crit(outs, region_map, labels, scan_labels.float(), batch["unclear"], module.seg_weight)[
            "loss"
        ].backward()

    def mil_outputs():
        return [(s.detach(), d) for s, d in outs]

    parts = [
        ("heads: 1x1x1 convolutions + sigmoids (K = 2)", heads),
        (
            "Dice: label map resampled to each grid (nearest)",
            lambda: [downsample_labels(region_map, sh) for sh in shapes],
        ),
        ("Dice: one-hot region masks", lambda: [region_one_hot(r, n) for r in resampled]),
        (
            "Dice: MONAI DiceLoss, both scales",
            lambda: sum(dice(s, t).mean() for (s, _), t in zip(outs, targets, strict=True)).backward(),
        ),
        (
            "Dice: L_s as the loss computes it (all of the above)",
            lambda: segmentation_loss([s for s, _ in outs], region_map, crit.dice_smooth).backward(),
        ),
        (
            "region MIL: counts of k (coarse products > t)",
            lambda: topk_counts(s0.detach(), d0.detach(), crit.threshold, factor, crit.k_min),
        ),
        ("region MIL: max pooling, coarse scale", lambda: max_mil_pooling(s0.detach(), d0).sum().backward()),
        (
            "region MIL: top-k pooling, fine scale, forward",
            lambda: topk_mil_pooling(s1.detach(), d1.detach(), k),
        ),
        (
            "region MIL: top-k pooling, fine scale, fwd + bwd",
            lambda: topk_mil_pooling(s1.detach(), d1, k).sum().backward(),
        ),
        (
            "region MIL: L_ra (counts, poolings, weighted BCE)",
            lambda: (
                region_mil_loss(crit.region_predictions(mil_outputs()), labels, crit.pos_weight)
                .sum()
                .backward()
            ),
        ),
        (
            "scan MIL: L_sa (maxima of D, BCE)",
            lambda: scan_mil_loss(scan_predictions(mil_outputs())[-1:], scan_labels.float()).sum().backward(),
        ),
        ("all losses: DaMILLoss forward + backward", whole_loss),
    ]
    return [(name, best_time(fn, device, repeats)) for name, fn in parts], k


def topk_cost(shape_fine: tuple[int, ...], device: str, repeats: int, ks=(1, 10, 100, 1000, 10000)) -> list:
    """Forward + backward of the fine-scale top-k pooling (17 regions x 4 types) with every bag at k."""
    gen = torch.Generator().manual_seed(0)
    s = torch.rand(1, 17, *shape_fine, generator=gen).to(device)
    d = torch.rand(1, 4, *shape_fine, generator=gen).to(device).requires_grad_(True)
    n_vox = s[0, 0].numel()
    out = []
    for k in ks:
        if k > n_vox:
            continue
        kk = torch.full((1, 17, 4), k, dtype=torch.long, device=device)
        out.append((k, best_time(lambda kk=kk: topk_mil_pooling(s, d, kk).sum().backward(), device, repeats)))
    return out


def operator_growth(module, backbone, batch, device: str, bf16: bool, repeats: int, top: int = 15) -> tuple:
    """PyTorch profiler over ``repeats`` full and bare steps (alternating, after a warm-up of each):
    per operator the median self CPU time (ms) and calls per step, sorted by what the full step adds."""
    from torch.profiler import ProfilerActivity, profile

    opt_full = torch.optim.Adam(module.parameters(), lr=5e-4)
    opt_bare = torch.optim.Adam(backbone.parameters(), lr=5e-4)
    steps = {
        "full": lambda: full_step(module, opt_full, batch, device, bf16),
        "bare": lambda: bare_step(backbone, opt_bare, batch["image"], module.net.n_scales, device, bf16),
    }
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    runs: dict[str, list[dict]] = {"full": [], "bare": []}
    for fn in steps.values():
        fn()
    for _ in range(repeats):
        for name, fn in steps.items():
            with profile(activities=activities) as prof:
                fn()
            runs[name].append({e.key: (e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()})

    def median_of(name: str, key: str) -> tuple[float, int]:
        values = [run.get(key, (0.0, 0)) for run in runs[name]]
        return statistics.median(v[0] for v in values), values[0][1]

    keys = {key for run in runs["full"] + runs["bare"] for key in run}
    rows = []
    for key in keys:
        (full_ms, full_n), (bare_ms, bare_n) = median_of("full", key), median_of("bare", key)
        rows.append((key, full_ms - bare_ms, full_ms, bare_ms, full_n, bare_n))
    rows.sort(key=lambda r: -r[1])
    total = tuple(
        statistics.median(sum(v[0] for v in run.values()) for run in runs[n]) for n in ("full", "bare")
    )
    return rows[:top], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=3, default=[160, 160, 80])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of both steps per dtype")
    parser.add_argument("--dtype", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    parser.add_argument("--profile", action="store_true", help="also the part-by-part profile")
    parser.add_argument(
        "--operators", action="store_true", help="with --profile: also the profiler's operator table"
    )
    parser.add_argument("--profile-repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    print(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    print(header(device, " and ".join(args.dtype) + " (bf16 = torch.autocast, as bf16-mixed)"))
    module = build_module(device)
    backbone = copy.deepcopy(module.net.backbone)  # the same U-Net, the same initial weights, no heads
    batch = synthetic_batch(module.n_regions, args.size, device)
    n_params = (sum(p.numel() for p in module.parameters()), sum(p.numel() for p in backbone.parameters()))
    print(
        f"input {tuple(args.size)}, batch 1; full: {n_params[0] / 1e6:.2f} M parameters, "
        f"bare: {n_params[1] / 1e6:.2f} M; {args.rounds} alternating rounds after one warm-up step each"
    )
    rows = []
    for dtype in args.dtype if args.rounds > 0 else []:  # --rounds 0: only the profile
        bf16 = dtype == "bf16"
        opt_full = torch.optim.Adam(module.parameters(), lr=5e-4)
        opt_bare = torch.optim.Adam(backbone.parameters(), lr=5e-4)
        reset_peak(device)
        times = alternate(
            {
                "bare": lambda bf16=bf16, o=opt_bare: bare_step(
                    backbone, o, batch["image"], module.net.n_scales, device, bf16
                ),
                "full": lambda bf16=bf16, o=opt_full: full_step(module, o, batch, device, bf16),
            },
            args.rounds,
        )
        rows.append((dtype, times))
        listed = {name: ", ".join(f"{t:.3f}" for t in ts) for name, ts in times.items()}
        print(f"  {dtype}: bare [{listed['bare']}] s, full [{listed['full']}] s")
        print(f"  {peak_memory(device)}")
    print()
    print(
        "| dtype | bare U-Net s/step (best / median) | full DaMIL step s/step (best / median) | overhead (best / median) |"
    )
    print("|---|---|---|---|")
    for dtype, times in rows:
        b_min, b_med = min(times["bare"]), statistics.median(times["bare"])
        f_min, f_med = min(times["full"]), statistics.median(times["full"])
        print(
            f"| {dtype} | {b_min:.3f} / {b_med:.3f} | {f_min:.3f} / {f_med:.3f} | "
            f"{100 * (f_min / b_min - 1):+.1f} % / {100 * (f_med / b_med - 1):+.1f} % |"
        )
    if not args.profile:
        return
    for dtype in args.dtype:
        bf16 = dtype == "bf16"
        print(
            f"\nwhat the heads and losses add, {dtype}: forward + backward of each part alone (best of {args.profile_repeats})"
        )
        parts, k = part_times(module, batch, device, bf16, args.profile_repeats)
        for name, t in parts:
            print(f"  {name:<54s} {1e3 * t:9.1f} ms")
        print(
            f"  k of the fine-scale top-k in this step: max {int(k.max())}, mean {k.float().mean():.1f} (t = {module.criterion.threshold})"
        )
        if not args.operators:
            continue
        rows_op, total = operator_growth(module, backbone, batch, device, bf16, args.profile_repeats)
        print(
            f"  profiler self CPU time: full {total[0]:.0f} ms, bare {total[1]:.0f} ms; operators adding most:"
        )
        print(f"  {'operator':<52s} {'added ms':>9s} {'full ms':>9s} {'bare ms':>9s} {'calls':>11s}")
        for key, added, full_ms, bare_ms, full_n, bare_n in rows_op:
            print(f"  {key[:52]:<52s} {added:9.1f} {full_ms:9.1f} {bare_ms:9.1f} {full_n:>5d}/{bare_n:<5d}")
    fine = tuple(s // 2 for s in args.size)
    print(f"\ntop-k pooling (fine grid {fine}, 17 x 4 bags) forward + backward against k (fp32):")
    for kk, t in topk_cost(fine, device, args.profile_repeats):
        print(f"  k = {kk:>6d}: {1e3 * t:8.1f} ms")


if __name__ == "__main__":
    main()
