"""Bulk-labelling throughput of ``reportsup-discretize``: scoring every Findings sentence vs scoring each
distinct sentence once per chunk (radiologists reuse template sentences), in one process.

    .venv/bin/python benchmarks/discretize_throughput.py CHECKPOINT [--reports 3000]

CHECKPOINT: a discretizer checkpoint, e.g. from `train.py experiment=crossdl_discretizer demo=true`.
"""

from __future__ import annotations

import argparse
import time

import torch
from _device import header, peak_memory, pick_device

from datamodules.synthetic.datasets.ct_reports import generate_ct_tables
from reportsup.discretize import Discretizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--reports", type=int, default=3000)
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    args = parser.parse_args()
    device = pick_device(args.device)
    print(header(device, "fp32 (the Discretizer's own)"))
    reports = generate_ct_tables(args.reports, seed=7)["ct_reports"][["report_id", "patient_id", "text"]]
    results = {}
    for dedupe in (False, True):
        d = Discretizer(args.checkpoint, dedupe=dedupe, device=device)
        start = time.perf_counter()
        outputs = [
            d.label_chunk(reports.iloc[i : i + args.chunk_size])
            for i in range(0, len(reports), args.chunk_size)
        ]
        seconds = time.perf_counter() - start
        results[dedupe] = (seconds, outputs)
        print(
            f"dedupe={dedupe!s:5}: {len(reports)} reports in {seconds:6.1f} s = {len(reports) / seconds:7.1f} reports/s"
        )
    same = all(a.equals(b) for a, b in zip(results[False][1], results[True][1], strict=True))
    print(
        f"speed-up from scoring distinct sentences once: {results[False][0] / results[True][0]:.2f}x "
        f"(identical output: {same}; {device}, {torch.get_num_threads()} threads)"
    )
    print(peak_memory(device))
    assert same, "dedupe changed the labels"


if __name__ == "__main__":
    main()
