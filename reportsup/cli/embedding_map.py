"""t-SNE maps of report representations, ALARM next to mean word2vec vectors (Wood et al. 2021, Fig. 4).

    reportsup-embeddings --alarm outputs/alarm_binary/<run> --word2vec outputs/alarm_baseline_word2vec/<run>

Both maps show the same test reports (those of the ALARM run's ``--test-set``), coloured by their
reference label. ALARM's representation is the attention-pooled vector; the baseline's the mean of
its word2vec vectors. Writes the PNG and the coordinates (CSV).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from datamodules.common.run_reports import run_test_reports
from datamodules.common.tables import ReportTableError
from lightning_modules.alarm.module import ALARMClassifier
from lightning_modules.alarm.word2vec_baseline import Word2VecBaseline
from lightning_modules.common.checkpoints import UnsafeCheckpointError
from reportsup.analysis.interpretability import plot_embedding_maps, tsne_map
from reportsup.contracts.run_dir import best_checkpoint, embedding_map_png


@torch.inference_mode()
def alarm_vectors(model: ALARMClassifier, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    out = []
    for i in range(0, len(texts), batch_size):
        batch = model.encoder.tokenize(list(texts[i : i + batch_size]))
        pooled, _ = model.represent(batch["input_ids"], batch["attention_mask"])
        out.append(pooled.float().numpy())
    return np.concatenate(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alarm", required=True, help="an ALARM run directory")
    parser.add_argument("--word2vec", default=None, help="a word2vec baseline run directory (optional)")
    parser.add_argument("--test-set", default="report_label")
    parser.add_argument("--label", default=None, help="default: the ALARM model's first label")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow unpickling the word2vec baseline's fitted models (only for a run you trust)",
    )
    parser.add_argument("--out", default=None, help="default: <alarm run>/embeddings_<set>_<label>.png")
    args = parser.parse_args(argv)
    try:
        alarm = ALARMClassifier.from_checkpoint(best_checkpoint(args.alarm))
        label = args.label or alarm.labels[0]
        reports = run_test_reports(args.alarm, args.test_set, label)
        texts = reports["text"].tolist()
        panels = {"ALARM (attention-pooled report vectors)": tsne_map(alarm_vectors(alarm, texts), args.seed)}
        if args.word2vec:
            baseline = Word2VecBaseline.from_checkpoint(
                best_checkpoint(args.word2vec), trust_checkpoint=args.trust_checkpoint
            )
            panels["mean word2vec vectors"] = tsne_map(baseline.features.mean_vectors(texts), args.seed)
    except (FileNotFoundError, ReportTableError, ValueError, UnsafeCheckpointError) as err:
        raise SystemExit(f"reportsup-embeddings: {err}") from None
    out = Path(args.out or Path(args.alarm) / embedding_map_png(args.test_set, label))
    if out.exists():
        raise SystemExit(
            f"reportsup-embeddings: {out} exists; choose another --out (nothing is overwritten)."
        )
    plot_embedding_maps(panels, reports["y"].to_numpy(), out, label)
    coords = reports[["id", "y"]].copy()
    for title, xy in panels.items():
        key = "alarm" if title.startswith("ALARM") else "word2vec"
        coords[f"{key}_x"], coords[f"{key}_y"] = xy[:, 0], xy[:, 1]
    coords.to_csv(out.with_suffix(".csv"), index=False)
    print(f"wrote {out} and {out.with_suffix('.csv')} ({len(reports)} reports)")


if __name__ == "__main__":
    main()
