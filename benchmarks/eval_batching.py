"""Benchmarks behind BENCHMARKS.md, each comparison run in one process and printed as a ratio.

1. Evaluation batching: length-sorted batches (ReportDataModule's evaluation order) vs the table's own
   order, both with dynamic padding, for ALARM inference with the MiniLM encoder on synthetic reports.
   Measures wall time and the number of padded token positions the encoder processes.
2. Synthetic report generation: seconds for 10,000 reports (issue target: under 10 s).

    .venv/bin/python benchmarks/eval_batching.py [--reports 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from _device import header, peak_memory, pick_device
from torch.utils.data import DataLoader, SequentialSampler

from datamodules.common.reports import LengthSortedSampler, ReportCollator, ReportDataset
from datamodules.synthetic.datasets.mri_reports import generate_tables
from lightning_modules.alarm.module import ALARMClassifier
from lightning_modules.common.encoders import minilm_encoder


def _run(model: ALARMClassifier, loader: DataLoader, device: str = "cpu") -> tuple[float, int, int]:
    tokens = padded = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            mask = batch["attention_mask"]
            model(batch["input_ids"].to(device), mask.to(device))
            tokens += mask.numel()
            padded += int((mask == 0).sum())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, tokens, padded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    device = pick_device(args.device)
    print(header(device, "fp32"))

    t0 = time.perf_counter()
    tables = generate_tables(10_000, seed=0)
    gen_seconds = time.perf_counter() - t0
    texts = tables["reports"]["text"].tolist()[: args.reports]
    dataset = ReportDataset(tables["reports"].iloc[: args.reports], torch.zeros(len(texts), 1).numpy())
    encoder = minilm_encoder()
    model = (
        ALARMClassifier(encoder=encoder, labels=["abnormal"], optimizer=torch.optim.Adam).eval().to(device)
    )
    collate = ReportCollator(encoder.tokenize)
    loaders = {
        "table order": DataLoader(
            dataset, batch_size=args.batch_size, sampler=SequentialSampler(dataset), collate_fn=collate
        ),
        "length-sorted": DataLoader(
            dataset, batch_size=args.batch_size, sampler=LengthSortedSampler(texts), collate_fn=collate
        ),
    }
    _run(model, loaders["table order"], device)  # warm-up
    best = {}
    for name, loader in loaders.items():
        runs = [_run(model, loader, device) for _ in range(args.repeats)]
        best[name] = min(runs, key=lambda r: r[0])
        secs, tokens, padded = best[name]
        print(
            f"{name:>14}: {secs:6.2f} s best of {args.repeats}, {tokens:,} token positions, {padded / tokens:5.1%} padding"
        )
    ratio = best["table order"][0] / best["length-sorted"][0]
    print(
        f"speed-up of length-sorted evaluation: {ratio:.2f}x wall time, "
        f"{best['table order'][1] / best['length-sorted'][1]:.2f}x fewer token positions "
        f"({args.reports} reports, batch {args.batch_size}, MiniLM, {device}, {torch.get_num_threads()} threads)"
    )
    print(peak_memory(device))
    print(
        f"synthetic reports: 10,000 generated in {gen_seconds:.2f} s ({10 / gen_seconds:.0f}x faster than the 10 s target)"
    )


if __name__ == "__main__":
    main()
