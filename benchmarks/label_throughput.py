"""Bulk-labelling throughput (issue 8): a naive Hugging Face loop against ``reportsup-label``, one process.

Model: an ALARM classifier (attention pooling + MLP) on a BERT-base-sized encoder (12 layers, hidden 768,
12 heads, intermediate 3072: BERT-base's transformer, 85 M parameters without embeddings) built from a
config, with a WordPiece tokenizer trained on the corpus: the hub (BioBERT) is not reachable here, and
throughput depends on the shapes, not on the pretrained values. So that the labels have margins like a
trained model's (an untrained head sits at p = 0.5, where any rounding flips a label), the head is fitted
for a few steps on frozen fp32 token vectors of other reports first.

Reports: synthetic head-MRI reports joined into documents whose word counts follow a log-normal with
median ``--median-words`` (100) and sigma 0.75, so about 5 % pass 512 tokens (the long tail the paper's
reports have); label = abnormal if any joined report is.

Paths, all on the same reports and the same weights:

* **naive**: a plain Hugging Face loop: table order, pad every report to 512 tokens, batch 16, fp32,
  ``torch.no_grad``. It costs about a second per report on 2 CPU cores, so it runs on a random sample
  of ``--naive-reports`` (default 256) of the reports; its reports/s is a rate and the ratios are rates.
* **reportsup-label** (``reportsup.labelling.label_archive``, the command's own function: chunk reading, row
  checks, length-sorted batches with per-batch padding, ``inference_mode``, Parquet parts) in fp32 (the
  gain of length sorting alone), bf16 autocast (oneDNN: AMX / AVX512-BF16 where the CPU has them) and
  int8 dynamic quantisation, each on all ``--reports`` reports.

Also printed: tokens/s (real, non-padding tokens), the transformer FLOPs those tokens cost, the
machine's dense bf16 and fp32 matmul rates measured on BERT-base's own FFN shape, the share of that
rate each path reaches, label agreement with the naive fp32 path on the naive sample, and a
projection for 121,556 reports (the ALARM archive) on one GPU.

    .venv/bin/python benchmarks/label_throughput.py                 # 2,000 reports, ~10 min on 2 cores
    .venv/bin/python benchmarks/label_throughput.py --reports 500 --naive-reports 64   # quick look
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _device import header

from datamodules.synthetic.datasets.mri_reports import generate_tables
from lightning_modules.alarm.module import ALARMClassifier
from lightning_modules.common.encoders import tiny_bert_encoder
from reportsup.contracts.label_folder import read_label_folder
from reportsup.labelling import (
    BATCH_TOKENS,
    ClassifierLabeller,
    compiled_model,
    label_archive,
    token_budget_batches,
)

BERT_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
ALARM_ARCHIVE = 121_556  # reports ALARM labelled in under 30 min on one 12 GB GPU (Wood et al. 2021)


def long_reports(n: int, median_words: float, seed: int = 0) -> pd.DataFrame:
    """``n`` documents of log-normal length (median ``median_words``, sigma 0.75) made of whole
    synthetic reports, the last one cut at the target word count."""
    source = generate_tables(n_reports=max(4 * n, 2000), seed=seed)["reports"]
    source = source[source["abnormal"].notna()]  # the granular set's reports carry categories only
    texts, labels = source["text"].tolist(), source["abnormal"].astype(int).tolist()
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        target = max(12, round(math.exp(rng.gauss(math.log(median_words), 0.75))))
        words: list[str] = []
        abnormal = 0
        while len(words) < target:
            j = rng.randrange(len(texts))
            words += texts[j].split()
            abnormal |= labels[j]
        rows.append({"report_id": f"R{i:06d}", "text": " ".join(words[:target]), "abnormal": abnormal})
    return pd.DataFrame(rows)


def matmul_rate(dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Dense matmul FLOP/s at BERT-base's FFN shape (tokens x 768 @ 768 x 3072), best of repeated runs."""
    a, b = torch.randn(2048, 768).to(dtype), torch.randn(768, 3072).to(dtype)
    for _ in range(3):
        a @ b  # warm-up (oneDNN kernel selection)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * a.shape[0] * a.shape[1] * b.shape[1] / (time.perf_counter() - start))
    return best


def bert_base_classifier(texts: list[str], fit_table: pd.DataFrame) -> ALARMClassifier:
    """The benchmark's model: ALARM on a BERT-base-sized encoder with a WordPiece tokenizer trained on
    ``texts`` and the fit table, its head fitted on frozen token vectors of ``fit_table`` (eval mode).
    Also the model of ``benchmarks/labelling_engines.py`` (issue 23)."""
    torch.manual_seed(0)
    encoder = tiny_bert_encoder([*fit_table["text"], *texts], vocab_size=30522, max_length=512, **BERT_BASE)
    model = ALARMClassifier(encoder, ["abnormal"], optimizer=torch.optim.Adam).eval()
    t0 = time.perf_counter()
    fit_head(model, fit_table)
    print(f"head fitted on frozen token vectors in {time.perf_counter() - t0:.0f} s")
    return model.eval()


def transformer_flops(lengths: np.ndarray, layers: int = 12, d: int = 768) -> float:
    """Useful FLOPs of the encoder's matmuls: per real token and layer 24 d^2 (QKV, output projection,
    FFN) plus 4 L d for the attention scores and their weighted sum over its own report's L tokens.
    Padding is not useful work: a path that pads pays for it in FLOP/s."""
    return float(np.sum(lengths * layers * (24 * d * d + 4 * lengths * d)))


def fit_head(model: ALARMClassifier, table: pd.DataFrame, steps: int = 60, max_tokens: int = 96) -> None:
    """Fit pooling + MLP on frozen fp32 token vectors (a stand-in for a trained model's decision margins)."""
    texts, y = table["text"].tolist(), torch.tensor(table["abnormal"].to_numpy(), dtype=torch.float32)
    with torch.no_grad():
        enc = model.encoder.tokenizer(
            [model.encoder.preprocess(t) for t in texts],
            padding="longest",
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        )
        hidden = torch.cat(
            [
                model.encoder(enc["input_ids"][i : i + 32], enc["attention_mask"][i : i + 32])
                for i in range(0, len(texts), 32)
            ]
        )
    params = [*model.pooling.parameters(), *model.classifier.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(len(texts), (32,), generator=gen)
        pooled, _ = model.pooling(hidden[idx], enc["attention_mask"][idx])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.classifier(pooled)[:, 0], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def naive_probabilities(model: ALARMClassifier, texts: list[str], batch_size: int = 16) -> np.ndarray:
    """The plain loop: table order, pad to 512, fp32."""
    out = []
    for start in range(0, len(texts), batch_size):
        enc = model.encoder.tokenizer(
            [model.encoder.preprocess(t) for t in texts[start : start + batch_size]],
            padding="max_length",
            truncation=True,
            max_length=512,
            return_tensors="pt",
        )
        out.append(torch.sigmoid(model(enc["input_ids"], enc["attention_mask"]))[:, 0].numpy())
    return np.concatenate(out)


def real_lengths(model: ALARMClassifier, texts: list[str]) -> np.ndarray:
    return np.array([len(ids) for ids in model.encoder.token_ids(texts)])


def sorted_padded_lengths(lengths: np.ndarray, batch_size: int) -> np.ndarray:
    """Per report, the padded length of its batch when reports are sorted by token count and batched
    as reportsup-label batches them (one chunk, its default token budget)."""
    order = np.argsort(-lengths, kind="stable")
    padded = np.empty_like(lengths)
    for batch in token_budget_batches(lengths[order], batch_size, BATCH_TOKENS):
        idx = order[batch]
        padded[idx] = lengths[idx].max()
    return padded


def encoder_only(batch: int = 64, length: int = 160, useful: int = 140) -> None:
    """Where the bf16 time goes: BERT-base alone on one batch (``useful`` real tokens of ``length``),
    under bf16 autocast (what reportsup-label does) and with bf16 weights (no casts), against fp32."""
    import copy

    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=8000, **BERT_BASE)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    ids = torch.randint(5, 8000, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[:, useful:] = 0
    flops = batch * length * 12 * (24 * 768**2 + 4 * length * 768)

    def best(fn, n: int = 3) -> float:
        fn()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    with torch.inference_mode():

        def autocast() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(input_ids=ids, attention_mask=mask)

        runs = {
            "fp32": best(lambda: model(input_ids=ids, attention_mask=mask), 1),
            "bf16 autocast": best(autocast),
            "bf16 weights": best(lambda: bf16(input_ids=ids, attention_mask=mask)),
        }
        # reportsup-label --compile: bf16 weights, torch.compile with frozen (prepacked) weights
        frozen = compiled_model(copy.deepcopy(model), "bf16")
        start = time.perf_counter()
        frozen(input_ids=ids[:4, :8], attention_mask=mask[:4, :8])
        print(f"compilation (once): {time.perf_counter() - start:.1f} s")
        runs["bf16 compiled, frozen weights"] = best(lambda: frozen(input_ids=ids, attention_mask=mask))
    peak = max(matmul_rate(torch.bfloat16, 1.0) for _ in range(3))  # the best of the machine's moments
    print(f"dense bf16 matmul (2048x768 @ 768x3072), best of 3: {peak / 1e9:.0f} GFLOP/s")
    for name, seconds in runs.items():
        print(
            f"encoder only, {batch} x {length} tokens, {name}: {seconds:.3f} s, {flops / seconds / 1e9:.0f} GFLOP/s"
            f" = {flops / seconds / peak:.0%} of the bf16 matmul rate"
        )
    print(f"ratio bf16 weights / autocast: {runs['bf16 autocast'] / runs['bf16 weights']:.2f}x")
    print(
        f"ratio compiled frozen / bf16 weights: {runs['bf16 weights'] / runs['bf16 compiled, frozen weights']:.2f}x"
    )


def batching(n_reports: int, median_words: float, rounds: int = 2) -> None:
    """Batch composition A/B, one process, one compiled bf16 model (reportsup-label --compile): plain
    batches of 64 or 32 reports against 64-report batches capped at 4,096 / 8,192 padded tokens
    (``--batch-tokens``), alternated ``rounds`` times on the same reports; best time of each."""
    table = long_reports(n_reports, median_words)
    torch.manual_seed(0)
    encoder = tiny_bert_encoder(list(table["text"]), vocab_size=30522, max_length=512, **BERT_BASE)
    model = ALARMClassifier(encoder, ["abnormal"], optimizer=torch.optim.Adam).eval()
    labeller = ClassifierLabeller(model, 64, torch.device("cpu"), "bf16", None, compile=True)
    texts = table["text"].tolist()
    configs = {"64 reports": (64, None), "32 reports": (32, None)}
    configs |= {"64 reports, 4096 tokens": (64, 4096), "64 reports, 8192 tokens": (64, 8192)}
    times: dict[str, list[float]] = {k: [] for k in configs}
    labeller.probabilities(texts[:200])  # warm-up
    for _ in range(rounds):
        for name, (size, tokens) in configs.items():
            labeller.batch_size, labeller.batch_tokens = size, tokens
            start = time.perf_counter()
            labeller.probabilities(texts)
            times[name].append(time.perf_counter() - start)
    base = min(times["64 reports"])
    for name, t in times.items():
        print(
            f"batches of {name:24s}: {len(texts) / min(t):6.1f} reports/s, {base / min(t):.2f}x batches of 64 "
            f"(runs {', '.join(f'{x:.1f}' for x in t)} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--naive-reports", type=int, default=256)
    parser.add_argument("--median-words", type=float, default=100)
    parser.add_argument("--batch-size", type=int, default=64, help="reportsup-label's batch size")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip", nargs="*", default=[], choices=["fp32", "bf16", "int8", "bf16 compiled"])
    parser.add_argument("--encoder-only", action="store_true", help="only the encoder micro-benchmark")
    parser.add_argument(
        "--batching", action="store_true", help="only the batch-composition A/B (compiled bf16)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.encoder_only:
        encoder_only()
        return
    if args.batching:
        batching(min(args.reports, 1000), args.median_words)
        return
    print(header("cpu", "fp32, bf16 autocast, int8 (per path)"))
    table = long_reports(args.reports, args.median_words)
    fit_table = long_reports(128, args.median_words, seed=1)  # other reports: the head never sees the test
    model = bert_base_classifier(table["text"].tolist(), fit_table)

    texts = table["text"].tolist()
    lengths = real_lengths(model, texts)
    print(
        f"{len(texts)} reports: words median {table['text'].str.split().str.len().median():.0f}, "
        f"tokens median {np.median(lengths):.0f}, mean {lengths.mean():.0f}, "
        f"{np.mean(lengths >= 512):.1%} truncated at 512"
    )
    # The machine is shared: its matmul rate moves by tens of percent within minutes. It is measured
    # before every path and at the end, and each path's share is taken of the highest rate seen (the
    # rate the machine allowed at its best, so the share is not flattered by a slow moment).
    seen: dict[str, list[float]] = {"fp32": [], "bf16": []}

    def measure_rates() -> None:
        seen["fp32"].append(matmul_rate(torch.float32, 1.0))
        seen["bf16"].append(matmul_rate(torch.bfloat16, 1.0))

    measure_rates()

    sample = np.sort(
        np.random.default_rng(0).choice(len(texts), min(args.naive_reports, len(texts)), replace=False)
    )
    sample_texts = [texts[i] for i in sample]
    measure_rates()
    start = time.perf_counter()
    naive = naive_probabilities(model, sample_texts)
    naive_s = time.perf_counter() - start
    results = {
        "naive (pad 512, batch 16, fp32)": {
            "n": len(sample),
            "seconds": naive_s,
            "tokens": int(lengths[sample].sum()),
            "flops": transformer_flops(lengths[sample]),
            "agreement": 1.0,
            "rate": "fp32",
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "alarm_bert_base.ckpt"
        torch.save({"state_dict": model.state_dict(), "label_manifest": model.label_manifest()}, ckpt)
        for name, kwargs in {
            "fp32": {"precision": "32"},
            "bf16": {"precision": "bf16"},
            "int8": {"precision": "32", "quantize": "int8"},
            "bf16 compiled": {"precision": "bf16", "compile": True},
        }.items():
            if name in args.skip:
                continue
            rows = table if name != "fp32" else table.iloc[sample]  # fp32: the naive sample (slow)
            slug = name.replace(" ", "_")
            archive = tmp / f"{slug}.parquet"
            rows[["report_id", "text"]].to_parquet(archive)
            measure_rates()
            counts = label_archive(
                ckpt,
                archive,
                tmp / f"out_{slug}",
                chunk_size=5000,
                batch_size=args.batch_size,
                device="cpu",
                check_agreement=0,
                progress=False,
                **kwargs,
            )
            labelled, _ = read_label_folder(tmp / f"out_{slug}")
            probs = (
                labelled.set_index("report_id")
                .loc[table["report_id"].iloc[sample], "abnormal_prob"]
                .to_numpy()
                if name != "fp32"
                else labelled["abnormal_prob"].to_numpy()
            )
            idx = np.arange(len(table)) if name != "fp32" else sample
            results[f"reportsup-label {name}"] = {
                "n": len(rows),
                "seconds": counts["seconds"],
                "tokens": int(lengths[idx].sum()),
                "flops": transformer_flops(lengths[idx]),
                "padding": 1
                - lengths[idx].sum() / sorted_padded_lengths(lengths[idx], args.batch_size).sum(),
                "agreement": float(np.mean((probs > 0.5) == (naive > 0.5))),
                "max_diff": float(np.abs(probs - naive).max()),
                "rate": "bf16" if name != "fp32" else "fp32",
                "compile_seconds": counts.get("compile_seconds", 0.0),
            }
    measure_rates()
    rates = {k: max(v) for k, v in seen.items()}
    for k, v in seen.items():
        print(
            f"dense {k} matmul (2048x768 @ 768x3072), {len(v)} measurements: "
            f"{min(v) / 1e9:.0f}-{max(v) / 1e9:.0f} GFLOP/s; shares below are of the highest"
        )
    base = (
        results["naive (pad 512, batch 16, fp32)"]["n"]
        / results["naive (pad 512, batch 16, fp32)"]["seconds"]
    )
    print(
        f"\n{'path':34s} {'reports':>7s} {'reports/s':>9s} {'tokens/s':>9s} {'x naive':>7s} {'GFLOP/s':>8s} {'of matmul':>9s} {'agree':>7s}"
    )
    for name, r in results.items():
        rps = r["n"] / r["seconds"]
        print(
            f"{name:34s} {r['n']:7d} {rps:9.2f} {r['tokens'] / r['seconds']:9.0f} {rps / base:6.1f}x "
            f"{r['flops'] / r['seconds'] / 1e9:8.0f} {r['flops'] / r['seconds'] / rates[r['rate']]:8.0%} {r['agreement']:7.2%}"
            + (
                f"  max |dp| {r['max_diff']:.4f}, padding {r['padding']:.1%}"
                if "max_diff" in r
                else f"  padding {1 - r['tokens'] / (512 * r['n']):.1%}"
            )
        )
    for name, r in results.items():
        if r.get("compile_seconds"):
            whole = r["seconds"] + r["compile_seconds"]
            print(
                f"{name}: plus a one-off compilation of {r['compile_seconds']:.1f} s before the first chunk "
                f"(not in the row above); with it {r['n'] / whole:.2f} reports/s = "
                f"{r['n'] / whole / base:.1f}x naive for these {r['n']} reports"
            )
    # "of matmul": useful FLOPs (real tokens only) per second against the dense matmul rate of the path's
    # dtype (int8 is compared with bf16, the fastest float rate here).
    best = max(
        (k for k in results if k != "naive (pad 512, batch 16, fp32)"),
        key=lambda k: results[k]["n"] / results[k]["seconds"],
        default=None,
    )
    if best:
        r = results[best]
        flops_per_report = r["flops"] / r["n"]
        for gpu, peak in (
            ("A100 (312 TFLOP/s bf16 dense)", 312e12),
            ("H100 SXM (989 TFLOP/s bf16 dense)", 989e12),
        ):
            for mfu in (0.3, 0.5):
                print(
                    f"projection: {ALARM_ARCHIVE:,} reports on one {gpu} at {mfu:.0%} of peak: "
                    f"{ALARM_ARCHIVE * flops_per_report / (peak * mfu):.0f} s"
                )


if __name__ == "__main__":
    main()
