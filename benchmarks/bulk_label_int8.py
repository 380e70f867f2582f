"""reportsup-label on CPU: fp32 versus int8 dynamic quantisation of the linear layers, in one process.

An ALARM classifier on the pretrained MiniLM encoder (real transformer weights, so quantisation error
is realistic; the classification head is untrained) labels the same synthetic reports with
``tools.bulk_label.ClassifierLabeller`` in fp32 and in int8, alternating, best of ``--repeats``.
Prints reports/s of both, the ratio, and how often the thresholded labels agree.

    .venv/bin/python benchmarks/bulk_label_int8.py --reports 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from datamodules.synthetic_mri_reports import generate_tables
from lightning_modules.alarm import ALARMClassifier
from lightning_modules.encoders import minilm_encoder
from tools.bulk_label import ClassifierLabeller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    texts = generate_tables(n_reports=args.reports, seed=0)["reports"]["text"].tolist()[: args.reports]
    torch.manual_seed(0)
    model = ALARMClassifier(minilm_encoder(), ["abnormal"], optimizer=torch.optim.Adam)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "alarm.ckpt"
        torch.save({"state_dict": model.state_dict(), "label_manifest": model.label_manifest()}, ckpt)
        cpu = torch.device("cpu")
        labellers = {
            "fp32": ClassifierLabeller(ckpt, args.batch_size, cpu, "32", None),
            "int8": ClassifierLabeller(ckpt, args.batch_size, cpu, "32", "int8"),
        }
    best = {name: float("inf") for name in labellers}
    probs = {}
    for _ in range(args.repeats):
        for name, labeller in labellers.items():
            start = time.perf_counter()
            probs[name] = labeller.probabilities(texts)
            best[name] = min(best[name], time.perf_counter() - start)
    for name in labellers:
        print(f"{name}: {len(texts) / best[name]:.1f} reports/s (best of {args.repeats})")
    print(f"ratio int8 / fp32: {best['fp32'] / best['int8']:.2f}x")
    agree = ((probs["fp32"] > 0.5) == (probs["int8"] > 0.5)).mean()
    print(
        f"label agreement: {agree:.4f}; largest probability difference {np.abs(probs['fp32'] - probs['int8']).max():.4f}"
    )


if __name__ == "__main__":
    main()
