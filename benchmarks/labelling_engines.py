"""Bulk labelling against the engines users would pick instead (issue 23), one process, side by side.

Model and reports are ``benchmarks/label_throughput.py``'s (imported, not copied): an ALARM classifier on
a BERT-base-sized encoder (12 layers, hidden 768) with its head fitted on frozen token vectors of other
reports, and synthetic head-MRI reports joined into documents of log-normal length. Two report sets:

* **long**: the issue-8 set, ``--reports`` (2,000) documents of median ``--median-words`` 100 words
  (about 130 tokens, ~3 % past 512);
* **short**: the same generator with median ``--short-median-words`` 47 words, which gives a median of
  about 60 tokens, as chest X-ray reports have (the script prints the measured token median).

Each path labels the same ``--sample`` reports of a set (a random sample of its ``--reports``, the same for
every path; all of them by default), with the same length-sorted batches (``reportsup-label``'s
tokenise-once, sort by token count, at most 64 reports and 4,096 padded tokens per batch):

* ``naive``: the plain Hugging Face loop (table order, pad to 512, batch 16, fp32, ``no_grad``) on
  ``--naive-reports`` of the sample (it costs about a second per report);
* ``label-*``: ``reportsup-label`` itself (:func:`reportsup.labelling.label_archive`: chunk reading, row
  checks, Parquet parts): fp32, ``--precision bf16``, ``--compile`` (fp32 and bf16), ``--quantize int8``
  (PyTorch dynamic), ``--backend onnxruntime`` (fp32 and ``--quantize int8``);
* ``ort-*``: ONNX Runtime as a user would run it, in their own loop: the classifier exported to ONNX and
  fused by :func:`onnxruntime.transformers.optimizer.optimize_model` (``model_type="bert"``), fp32, and
  int8 by :func:`onnxruntime.quantization.quantize_dynamic` (reportsup's cached export, reused by the
  ``label-ort*`` rows);
* ``ct2-*``: CTranslate2's ``Encoder`` (fp32, int8) on the BERT encoder, its hidden states pooled by the
  model's attention pooling and MLP head in torch (CTranslate2 runs encoders, not this head), in their own
  loop; ``label-ct2*``: the same engine as ``reportsup-label --backend ctranslate2``;
* ``auto``: what ``reportsup-label``'s default ``--backend auto`` chooses here: its calibration (fresh
  cache) and choice; its labelling rate is the chosen row's.

Per path: reports/s and real tokens/s of the labelling loop; x naive; useful GFLOP/s (the encoder's
matmul FLOPs of the real tokens) as a share of the machine's dense matmul rate at BERT-base's FFN shape
(measured before every path; the highest seen is used: fp32 paths against fp32, bf16 against bf16, int8
against the faster float rate); labels identical to naive fp32 on the naive reports and to ``reportsup-label``
fp32 on the whole sample (% of reports, at the model's thresholds) and the largest probability gap to
naive fp32; one-off costs (export, optimisation, quantisation, conversion, compilation, calibration) in
their own column, not in the rate.

``--startup``: time to first label instead. ``reportsup-label`` is started as a new process twice per path
on ``--startup-reports`` reports, first with an empty engine cache (``REPORTSUP_CACHE_DIR``), then with
the cache the first left (ONNX export, auto's calibration, inductor's kernels); wall time of each process
and the one-off part the labeller records.

    .venv/bin/python benchmarks/labelling_engines.py                      # both sets, every path
    .venv/bin/python benchmarks/labelling_engines.py --sets short --sample 400 --naive-reports 32
    .venv/bin/python benchmarks/labelling_engines.py --startup --startup-reports 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from _device import header, peak_memory, pick_device, reset_peak
from label_throughput import (
    bert_base_classifier,
    long_reports,
    matmul_rate,
    naive_probabilities,
    real_lengths,
    transformer_flops,
)

from lightning_modules.alarm.module import ALARMClassifier
from reportsup.api.report_models import file_sha256
from reportsup.contracts.label_folder import read_label_folder
from reportsup.engines.auto import cpu_signature
from reportsup.engines.ctranslate2_backend import CTranslate2Classifier, cached_conversion
from reportsup.engines.onnx_export import cached_onnx_model
from reportsup.engines.onnxruntime_backend import OnnxRuntimeClassifier
from reportsup.labelling import BATCH_TOKENS, label_archive, resolve_backend, token_budget_batches

ROOT = Path(__file__).resolve().parent.parent
#: --short-median-words: log-normal documents of this median word count have a median of ~60 tokens
SHORT_MEDIAN_WORDS = 47
#: reportsup-label's own paths: row name -> label_archive options
LABEL_PATHS: dict[str, dict[str, Any]] = {
    "label-fp32": {"backend": "torch", "precision": "32"},
    "label-bf16": {"backend": "torch", "precision": "bf16"},
    "label-compile": {"backend": "torch", "precision": "32", "compile": True},
    "label-bf16-compile": {"backend": "torch", "precision": "bf16", "compile": True},
    "label-int8": {"backend": "torch", "precision": "32", "quantize": "int8"},
    "label-ort": {"backend": "onnxruntime", "precision": "32"},
    "label-ort-int8": {"backend": "onnxruntime", "precision": "32", "quantize": "int8"},
    "label-ct2": {"backend": "ctranslate2", "precision": "32"},
    "label-ct2-int8": {"backend": "ctranslate2", "precision": "32", "quantize": "int8"},
}
PATH_TITLES = {
    "naive": "naive HF loop (table order, pad 512, batch 16, fp32)",
    "label-fp32": "`reportsup-label --backend torch` fp32",
    "label-bf16": "`reportsup-label --precision bf16` (autocast)",
    "label-compile": "`reportsup-label --compile` (fp32)",
    "label-bf16-compile": "`reportsup-label --precision bf16 --compile`",
    "label-int8": "`reportsup-label --quantize int8` (PyTorch dynamic)",
    "label-ort": "`reportsup-label --backend onnxruntime` (fp32)",
    "label-ort-int8": "`reportsup-label --backend onnxruntime --quantize int8`",
    "label-ct2": "`reportsup-label --backend ctranslate2` (fp32)",
    "label-ct2-int8": "`reportsup-label --backend ctranslate2 --quantize int8`",
    "ort": "ONNX Runtime fp32, optimizer fusions (own loop)",
    "ort-int8": "ONNX Runtime int8, `quantize_dynamic` (own loop)",
    "ct2": "CTranslate2 encoder fp32 + torch head (own loop)",
    "ct2-int8": "CTranslate2 encoder int8 + torch head (own loop)",
}
ALL_PATHS = ["naive", "ort", "ort-int8", "ct2", "ct2-int8", *LABEL_PATHS, "auto"]


def sorted_batches(
    model: ALARMClassifier, texts: list[str]
) -> list[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """reportsup-label's batches: tokenised once, sorted by token count, at most 64 reports and
    BATCH_TOKENS padded tokens each; ``(report indices, padded batch)``."""
    ids = model.encoder.token_ids(texts)
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(-lengths, kind="stable")
    out = []
    for batch in token_budget_batches(lengths[order], 64, BATCH_TOKENS):
        idx = order[batch]
        out.append((idx, model.encoder.pad([ids[i] for i in idx])))
    return out


@torch.inference_mode()
def own_loop(
    model: ALARMClassifier, texts: list[str], logits: Callable[[dict[str, torch.Tensor]], torch.Tensor]
) -> np.ndarray:
    """A peer engine's loop over reportsup-label's batches (tokenisation included in the time)."""
    probs = np.zeros(len(texts), dtype=np.float32)
    for idx, batch in sorted_batches(model, texts):
        probs[idx] = torch.sigmoid(logits(batch).float())[:, 0].numpy()
    return probs


def run_set(
    name: str,
    table: pd.DataFrame,
    model: ALARMClassifier,
    ckpt: Path,
    work: Path,
    args: argparse.Namespace,
    rates: dict[str, list[float]],
) -> list[dict[str, Any]]:
    """Every path on one report set; one result row per path."""
    rng = np.random.default_rng(0)
    n = min(args.short_sample if name == "short" and args.short_sample else args.sample, len(table))
    sample = np.sort(rng.choice(len(table), n, replace=False))
    rows = table.iloc[sample].reset_index(drop=True)
    texts = rows["text"].tolist()
    naive_idx = np.sort(rng.choice(n, min(args.naive_reports, n), replace=False))
    lengths = real_lengths(model, texts)
    print(
        f"\n## {name} set: {n} of {len(table)} reports; tokens median {np.median(lengths):.0f}, mean "
        f"{lengths.mean():.0f}, {np.mean(lengths >= 512):.1%} truncated at 512; naive loop on {len(naive_idx)}"
    )
    archive = work / f"{name}.parquet"
    rows[["report_id", "text"]].to_parquet(archive)
    threshold = float(model.threshold)
    cache = work / "engine_cache"  # one per process: the second set reuses the first's ONNX exports
    sha = file_sha256(ckpt)
    results: list[dict[str, Any]] = []
    device = args.device

    def measure_rates() -> None:
        rates["fp32"].append(matmul_rate(torch.float32, 1.0))
        rates["bf16"].append(matmul_rate(torch.bfloat16, 1.0))

    def record(path: str, idx: np.ndarray, seconds: float, probs: np.ndarray, **extra: Any) -> None:
        results.append(
            {
                "set": name,
                "path": path,
                "n": len(idx),
                "seconds": seconds,
                "tokens": int(lengths[idx].sum()),
                "flops": transformer_flops(lengths[idx]),
                "probs": probs,
                "idx": idx,
                "peak": peak_memory(device),
                "threshold": threshold,
                **extra,
            }
        )
        r = results[-1]
        print(
            f"{path:20s} {r['n']:5d} reports {seconds:8.1f} s {r['n'] / seconds:8.2f} reports/s"
            + (f"  one-off {extra['one_off']}" if extra.get("one_off") else ""),
            flush=True,
        )

    for path in args.paths:
        if device != "cpu" and (path.startswith(("ort", "ct2", "label-ort", "label-ct2")) or "int8" in path):
            print(f"{path}: CPU only, skipped on {device}")
            continue
        measure_rates()
        reset_peak(device)
        if path == "naive":
            model.to(device)
            start = time.perf_counter()
            probs = naive_probabilities(model, [texts[i] for i in naive_idx])
            record(path, naive_idx, time.perf_counter() - start, probs, dtype="fp32")
            model.cpu()
        elif path in LABEL_PATHS:
            options = LABEL_PATHS[path]
            out = work / f"out_{name}_{path}"
            counts = label_archive(
                ckpt,
                archive,
                out,
                chunk_size=max(n, 1),
                batch_size=64,
                device=device,
                check_agreement=0,
                progress=False,
                engine_cache=cache,
                **options,
            )
            labelled, manifest = read_label_folder(out)
            probs = labelled.set_index("report_id").loc[rows["report_id"], "abnormal_prob"].to_numpy()
            one_off = {}
            if counts.get("compile_seconds"):
                one_off["compilation"] = counts["compile_seconds"]
            if counts.get("setup_seconds"):
                engine = manifest.get("engine", {})
                what = "cached export loaded" if engine.get("export_reused") else "export + optimise/quantise"
                one_off[what] = counts["setup_seconds"]
            dtype = (
                "int8" if options.get("quantize") else ("bf16" if options["precision"] == "bf16" else "fp32")
            )
            record(path, np.arange(n), counts["seconds"], probs, one_off=one_off, dtype=dtype)
        elif path in ("ort", "ort-int8"):
            quantize = "int8" if path == "ort-int8" else None
            start = time.perf_counter()
            export = cached_onnx_model(model, sha, quantize, cache)
            session = OnnxRuntimeClassifier(export.path)
            what = "export + optimise" if quantize is None else "quantise (from the fp32 export)"
            if export.reused:
                what = "cached export loaded"
            one_off = {what: time.perf_counter() - start}
            fused = export.record.get("fused_operators") or {}
            start = time.perf_counter()
            probs = own_loop(model, texts, lambda b, s=session: s(b["input_ids"], b["attention_mask"]))
            record(
                path,
                np.arange(n),
                time.perf_counter() - start,
                probs,
                one_off=one_off,
                dtype=quantize or "fp32",
                fused=fused,
            )
        elif path in ("ct2", "ct2-int8"):
            quantize = "int8" if path == "ct2-int8" else None
            try:
                start = time.perf_counter()
                conversion = cached_conversion(model, sha, cache)
                engine = CTranslate2Classifier(model, conversion.path, quantize)
                seconds = time.perf_counter() - start
            except Exception as err:  # the converter cannot take the model: recorded, not fatal
                print(f"{path}: CTranslate2 could not run this encoder: {type(err).__name__}: {err}")
                results.append(
                    {"set": name, "path": path, "failed": f"{type(err).__name__}: {str(err)[:200]}"}
                )
                continue
            start = time.perf_counter()
            probs = own_loop(model, texts, lambda b, e=engine: e(b["input_ids"], b["attention_mask"]))
            label = "cached conversion loaded" if conversion.reused else "conversion + load"
            label += " (int8 weights)" if quantize else ""
            note = (
                "converter needs config.position_embedding_type (gone in transformers 5): set to absolute"
                if conversion.record.get("position_embedding_type_set_for_the_converter")
                else ""
            )
            record(
                path,
                np.arange(n),
                time.perf_counter() - start,
                probs,
                one_off={label: seconds},
                dtype="int8" if path == "ct2-int8" else "fp32",
                note=note,
            )
        elif path == "auto":
            out = work / f"auto_{name}"
            out.mkdir(exist_ok=True)
            # a fresh calibration cache for each set, but the ONNX exports of the rows above (their cost is
            # in those rows): the time here is the calibration's
            auto_cache = work / f"auto_cache_{name}"
            auto_cache.mkdir(exist_ok=True)
            for engine in ("onnx", "ctranslate2"):
                if (cache / engine).exists():
                    (auto_cache / engine).symlink_to(cache / engine, target_is_directory=True)
            start = time.perf_counter()
            backend, precision, quantize, compile, choice = resolve_backend(
                "auto",
                torch.device(device),
                "auto",
                None,
                False,
                model,
                sha,
                texts,
                out,
                64,
                BATCH_TOKENS,
                auto_cache,
            )
            seconds = time.perf_counter() - start
            results.append({"set": name, "path": path, "choice": choice, "seconds": seconds})
            print(
                f"auto: {choice['name']} ({choice.get('reason')}), decided in {seconds:.1f} s (calibration, exports included)"
            )
            for m in choice.get("measurements", []):
                print(
                    f"   calibration {m['name']:22s} {m['reports_per_second']:7.2f} reports/s, labels = torch fp32 on "
                    f"{m['label_agreement']:.1%}, setup {m['setup_seconds']:.1f} s"
                )
        else:
            raise ValueError(f"unknown path {path}")
    return results


def table(results: list[dict[str, Any]], rates: dict[str, float]) -> str:
    """The markdown table of one set's results."""
    by = {r["path"]: r for r in results}
    naive = by.get("naive")
    base = naive["n"] / naive["seconds"] if naive else None
    reference = by.get("label-fp32")
    lines = [
        "| path | reports | reports/s | real tokens/s | x naive | of the matmul rate | labels = naive fp32 | labels = reportsup-label fp32 (all) | max abs prob. diff vs naive | one-off (not in the rate) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["path"] == "auto":
            c = r["choice"]
            lines.append(
                f"| `reportsup-label` default (`--backend auto`) | - | = {c['name']} | | | | | | | "
                f"calibration {r['seconds']:.0f} s (exports included; cached for later runs) |"
            )
            continue
        if "failed" in r:
            lines.append(f"| {PATH_TITLES[r['path']]} | - | could not run: {r['failed']} | | | | | | | |")
            continue
        rps = r["n"] / r["seconds"]
        dtype_rate = (
            rates["bf16"]
            if r["dtype"] == "bf16"
            else rates["fp32"]
            if r["dtype"] == "fp32"
            else max(rates.values())
        )
        share = r["flops"] / r["seconds"] / dtype_rate
        cells = [PATH_TITLES[r["path"]], str(r["n"]), f"{rps:.2f}", f"{r['tokens'] / r['seconds']:,.0f}"]
        cells.append(f"{rps / base:.1f}x" if base else "-")
        cells.append(f"{share:.0%} (of {'fp32' if dtype_rate == rates['fp32'] else 'bf16'})")
        if naive and r["path"] != "naive":
            # the naive reports' positions in this path's probabilities
            pos = np.searchsorted(r["idx"], naive["idx"])
            mine = r["probs"][pos]
            t = r["threshold"]
            same = np.mean((mine > t) == (naive["probs"] > t))
            cells += [f"{same:.1%} of {len(pos)}"]
        else:
            cells += ["-"]
        if reference and r["path"] not in ("naive", "label-fp32"):
            t = r["threshold"]
            same = np.mean((r["probs"] > t) == (reference["probs"] > t))
            cells.append(f"{same:.2%} of {r['n']}")
        else:
            cells.append("-")
        if naive and r["path"] != "naive":
            cells.append(f"{np.abs(mine - naive['probs']).max():.4f}")
        else:
            cells.append("-")
        one_off = r.get("one_off") or {}
        cells.append(", ".join(f"{k} {v:.1f} s" for k, v in one_off.items()) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build(args: argparse.Namespace, work: Path) -> tuple[dict[str, pd.DataFrame], ALARMClassifier, Path]:
    """The report sets, the model (tokenizer trained on all of them) and its checkpoint file."""
    sets = {}
    if "long" in args.sets:
        sets["long"] = long_reports(args.reports, args.median_words)
    if "short" in args.sets:
        sets["short"] = long_reports(args.reports, args.short_median_words, seed=2)
    fit_table = long_reports(128, args.median_words, seed=1)  # other reports: the head never sees the sets
    texts = [t for s in sets.values() for t in s["text"]]
    model = bert_base_classifier(texts, fit_table)
    ckpt = work / "alarm_bert_base.ckpt"
    torch.save({"state_dict": model.state_dict(), "label_manifest": model.label_manifest()}, ckpt)
    return sets, model, ckpt


def startup(args: argparse.Namespace, work: Path, ckpt: Path, table: pd.DataFrame) -> None:
    """Time to first label: each path as a new reportsup-label process, cold cache then warm."""
    archive = work / "startup.parquet"
    table.head(args.startup_reports)[["report_id", "text"]].to_parquet(archive)
    configs = {
        "default (--backend auto)": [],
        "--backend torch (fp32)": ["--backend", "torch"],
        "--backend onnxruntime": ["--backend", "onnxruntime"],
        "--backend onnxruntime --quantize int8": ["--backend", "onnxruntime", "--quantize", "int8"],
        "--backend ctranslate2": ["--backend", "ctranslate2"],
        "--backend ctranslate2 --quantize int8": ["--backend", "ctranslate2", "--quantize", "int8"],
        "--backend torch --compile": ["--backend", "torch", "--compile"],
        "--backend torch --precision bf16 --compile": [
            "--backend",
            "torch",
            "--precision",
            "bf16",
            "--compile",
        ],
    }
    configs = {k: v for k, v in configs.items() if not args.startup_paths or k in args.startup_paths}
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    print(f"\n## time to first label: {args.startup_reports} reports, a new process per run")
    print("| path | run | process wall time | one-off in it | labelling loop | decided / note |")
    print("|---|---|---|---|---|---|")
    for i, (name, options) in enumerate(configs.items()):
        cache = work / f"startup_cache_{i}"
        for run in ("first (empty cache)", "second (cache of the first)"):
            out = work / f"startup_{i}_{run.split()[0]}"
            cmd = [
                sys.executable,
                "-m",
                "reportsup.cli.label",
                str(ckpt),
                str(archive),
                str(out),
                "--no-progress",
            ]
            start = time.perf_counter()
            proc = subprocess.run(
                [*cmd, *options],
                env={**env, "REPORTSUP_CACHE_DIR": str(cache)},
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            wall = time.perf_counter() - start
            if proc.returncode:
                print(f"| {name} | {run} | failed: {proc.stderr.strip().splitlines()[-1][:200]} | | | |")
                continue
            log = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
            one_off = log.get("compile_seconds", 0) + log.get("setup_seconds", 0)
            choice = log.get("backend_choice") or {}
            one_off += choice.get("resolve_seconds", 0)
            what = (
                f"{choice['name']} ({'cached choice' if choice.get('cached') else 'calibrated'})"
                if choice
                else ""
            )
            print(
                f"| {name} | {run} | {wall:.1f} s | {one_off:.1f} s | {log['seconds']:.1f} s | {what} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=2000, help="reports per set (the issue-8 set: 2,000)")
    parser.add_argument("--sample", type=int, default=2000, help="of them, labelled by every path")
    parser.add_argument("--short-sample", type=int, default=None, help="the short set's (default: --sample)")
    parser.add_argument("--naive-reports", type=int, default=128)
    parser.add_argument("--median-words", type=float, default=100)
    parser.add_argument("--short-median-words", type=float, default=SHORT_MEDIAN_WORDS)
    parser.add_argument("--sets", nargs="+", default=["long", "short"], choices=["long", "short"])
    parser.add_argument("--paths", nargs="+", default=ALL_PATHS, choices=ALL_PATHS)
    parser.add_argument("--skip", nargs="*", default=[], choices=ALL_PATHS)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--device", default="cpu", help="cpu (default), auto or cuda: the torch paths on a GPU"
    )
    parser.add_argument("--startup", action="store_true", help="time to first label instead of the table")
    parser.add_argument("--startup-reports", type=int, default=100)
    parser.add_argument(
        "--startup-paths", nargs="*", default=[], help="--startup: only these (e.g. '--backend ctranslate2')"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.device = pick_device(args.device)
    args.paths = [p for p in args.paths if p not in args.skip]
    print(header(args.device, "per path: fp32, bf16, int8", "ONNX Runtime and CTranslate2 on the CPU"))
    sig = cpu_signature()
    print(
        f"CPU flags that matter here: {', '.join(sig['flags'])}; AMX: {'yes' if 'amx_tile' in sig['flags'] else 'no'}"
    )
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; command: {' '.join(sys.argv)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets, model, ckpt = build(args, work)
        if args.startup:
            startup(args, work, ckpt, next(iter(sets.values())))
            return
        rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
        results = {name: run_set(name, t, model, ckpt, work, args, rates) for name, t in sets.items()}
    best = {k: max(v) for k, v in rates.items()}
    for k, v in rates.items():
        print(
            f"dense {k} matmul (2048x768 @ 768x3072), {len(v)} measurements: {min(v) / 1e9:.0f}-{max(v) / 1e9:.0f} GFLOP/s"
        )
    for name, rs in results.items():
        print(f"\n### {name} set\n")
        print(table(rs, best))
        peaks = {r["path"]: r["peak"] for r in rs if "peak" in r}
        if args.device != "cpu":
            for path, peak in peaks.items():
                print(f"{path}: {peak}")
    print(f"\n{peak_memory(args.device)}")


if __name__ == "__main__":
    main()
