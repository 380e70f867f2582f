"""Bulk labelling of a whole report archive with a trained report model, resumably: the library behind
``reportsup-label`` (:mod:`reportsup.cli.label`) and :class:`reportsup.ReportLabeller`.

    reportsup-label outputs/alarm_binary/<run> archive.parquet labels/
    reportsup-label CKPT_OR_EXPORTED_DIR archive.csv labels/ --shards 8   # a SLURM job array of 8 tasks

ALARM and spine NLP (report classifiers: one probability per label) and the Cross-DL discretizer
(region x type matrices) are recognised from their label manifest; the model comes from a run folder
(its best checkpoint), a checkpoint (read with ``weights_only=True``) or a ``reportsup-export`` folder. The archive (CSV,
Parquet or JSONL with ``report_id`` and ``text``) is streamed in chunks (bounded memory). Within a
chunk, reports are tokenized once, sorted by token count and padded per batch (no pad-to-512; at most
``--batch-size`` reports and ``--batch-tokens`` padded tokens per batch); inference runs under
``torch.inference_mode``, with bf16/fp16 autocast (``--precision``; bf16 is the default on GPUs that
have it, and on CPUs it runs on AMX / AVX512-BF16 where present) or int8 dynamic quantisation of the
linear layers on CPU (``--quantize int8``); ``--compile`` adds ``torch.compile`` with frozen weights
(weights cast once to the precision's dtype instead of autocast). Whenever the labels do not come from fp32, their agreement
with fp32 on the first ``--check-agreement`` reports is measured and recorded (``fp32_agreement``).

The output folder holds one Parquet part per chunk, written to a temporary name and renamed when
complete (atomic), ``errors.csv`` (rows not labelled: empty text, text that is not valid UTF-8, no
report id, a repeated id; with file row number and reason), and ``manifest.json``: the checkpoint's
path, SHA-256 and label manifest, so every training run on these labels knows which labeller made them
(each part also carries the SHA-256 in its Parquet metadata). A rerun skips the chunks already written;
another checkpoint into the same folder is refused. ``--shards N`` splits the chunks over N processes
(a SLURM job array: the array task id picks the shard; ``srun`` with one task per GPU: the task's
SLURM_PROCID picks the shard and its SLURM_LOCALID the GPU).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from datamodules.common.tables import ReportTableError, count_rows, read_chunks, text_problem
from lightning_modules.common.report_model import ReportModel
from reportsup.api.report_models import CLASSIFIER_TASKS, REPORT_MODELS, load_report_model, model_source

MANIFEST = "manifest.json"


def check_rows(chunk: pd.DataFrame, first_row: int, seen: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(valid rows, errors)``: a report without an id, with an empty or undecodable text, or whose id
    was already seen is listed with its file row number (header = row 1) and reason, never dropped."""
    errors = []
    keep = np.ones(len(chunk), dtype=bool)
    ids = chunk["report_id"].tolist()
    for i, (rid, text) in enumerate(zip(ids, chunk["text"].tolist(), strict=True)):
        row = first_row + i + 2
        reason = None
        if rid is None or (isinstance(rid, float) and np.isnan(rid)) or not str(rid).strip():
            reason = "no report_id"
        else:
            reason = text_problem(text)
        if reason is None and str(rid) in seen:
            reason = "report_id repeated"
        if reason:
            keep[i] = False
            errors.append({"row": row, "report_id": rid, "reason": reason})
        else:
            seen.add(str(rid))
    return chunk.loc[keep].reset_index(drop=True), pd.DataFrame(
        errors, columns=["row", "report_id", "reason"]
    )


def classifier_class(task: str | None) -> type | None:
    """The report classifier (one sigmoid output per label) of a manifest task, or None."""
    return REPORT_MODELS[task] if task in CLASSIFIER_TASKS else None


# --precision values that run in a 16-bit float dtype (autocast, or weights cast once by --compile)
HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def compiled_model(model: torch.nn.Module, precision: str) -> Callable:
    """``torch.compile`` (inductor, dynamic shapes: one compilation serves every batch shape) with
    weight freezing, so that oneDNN prepacks the linear layers' weights once instead of at every call;
    under bf16/fp16 the weights are cast once. Measured on BERT-base, bf16, 2 CPU cores: 1.26x the eager
    bf16-weight encoder (BENCHMARKS.md). Freezing is a process-wide inductor setting: reportsup-label owns its
    process."""
    import torch._inductor.config as inductor_config

    dtype = HALF_DTYPES.get(precision)
    if dtype is not None:
        model.to(dtype)
    inductor_config.freezing = True
    return torch.compile(model, dynamic=True)


#: default --batch-tokens: padded tokens per batch, on top of --batch-size. Long reports go in small batches
#: (their attention scores and activations stay in cache), short ones in big batches: 1.19x plain batches
#: of 64 for BERT-base, bf16 compiled, on 2 CPU cores (benchmarks/label_throughput.py --batching,
#: BENCHMARKS.md). On a GPU raise it.
BATCH_TOKENS = 4096


def token_budget_batches(lengths: Sequence[int], max_reports: int, max_tokens: int | None) -> list[slice]:
    """Consecutive batches of reports sorted by decreasing token count: at most ``max_reports`` each,
    and at most ``max_tokens`` padded tokens (batch x its longest report; at least one report)."""
    batches, start = [], 0
    while start < len(lengths):
        longest = max(1, int(lengths[start]))
        size = max(1, min(max_reports, max_tokens // longest)) if max_tokens else max_reports
        batches.append(slice(start, min(start + size, len(lengths))))
        start += size
    return batches


class ClassifierLabeller:
    """A reportsup report classifier (ALARM, spine NLP; one sigmoid output per label) applied to reports."""

    def __init__(
        self,
        model: ReportModel,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
        precision: str = "32",
        quantize: str | None = None,
        compile: bool = False,
        batch_tokens: int | None = BATCH_TOKENS,
    ) -> None:
        device = torch.device(device)
        if precision not in ("32", *HALF_DTYPES):
            raise ValueError(f"precision {precision!r}: choose 32, bf16 or fp16.")
        self.model = model.to(device).eval()
        self.device, self.batch_size, self.precision = device, batch_size, precision
        self.batch_tokens = batch_tokens
        self.forward = self.model
        self.compile_seconds = 0.0
        if compile and quantize:
            raise ValueError("--compile and --quantize int8 do not combine; use --precision bf16 --compile.")
        if quantize == "int8":
            if device.type != "cpu":
                raise ValueError(
                    "--quantize int8 is dynamic quantisation for CPUs; on a GPU use --precision bf16."
                )
            self.model = torch.ao.quantization.quantize_dynamic(
                self.model, {torch.nn.Linear}, dtype=torch.qint8
            )
        self.labels = list(self.model.labels)
        self.threshold = float(self.model.threshold)
        if compile:
            self.forward = compiled_model(self.model, precision)
            # Compile now, on a small batch (batch and length >= 2: dimensions of size 0/1 would be
            # specialised), so that the one-off cost is measured apart from the labelling.
            start = time.perf_counter()
            self.probabilities(["compilation warm-up report text"] * 3 + ["warm up"])
            self.compile_seconds = time.perf_counter() - start

    @torch.inference_mode()
    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not len(texts):  # the tokenizer fails on an empty batch
            return out
        # Tokenized once, then sorted by token count: a batch holds reports of (nearly) one length, so
        # per-batch padding adds almost nothing.
        ids = self.model.encoder.token_ids(texts)
        lengths = np.array([len(x) for x in ids])
        order = np.argsort(-lengths, kind="stable")
        dtype = HALF_DTYPES.get(self.precision)
        for batch_slice in token_budget_batches(lengths[order], self.batch_size, self.batch_tokens):
            idx = order[batch_slice]
            batch = {k: v.to(self.device) for k, v in self.model.encoder.pad([ids[i] for i in idx]).items()}
            # bf16 autocast on CPU too: oneDNN runs it on AMX / AVX512-BF16 where the CPU has them.
            # A compiled model already holds the weights in that dtype (no casts at run time).
            autocast = dtype is not None and self.forward is self.model
            with torch.autocast(self.device.type, dtype=dtype, enabled=autocast):
                logits = self.forward(batch["input_ids"], batch["attention_mask"])
            out[idx] = torch.sigmoid(logits.float()).cpu().numpy()
        return out

    def label_chunk(self, chunk: pd.DataFrame) -> pd.DataFrame:
        probs = self.probabilities(chunk["text"].astype(str).tolist())
        out = (
            chunk[[c for c in ("report_id", "patient_id") if c in chunk.columns]]
            .astype(str)
            .reset_index(drop=True)
        )
        for j, label in enumerate(self.labels):
            out[f"{label}_prob"] = probs[:, j]
            out[label] = (probs[:, j] > self.threshold).astype("int8")
        return out

    def manifest(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.label_manifest().items() if k != "encoder"} | {
            "encoder": {k: v for k, v in self.model.encoder.manifest().items() if k != "files"}
        }


class DiscretizerLabeller:
    """The Cross-DL discretizer applied to whole reports (``reportsup-discretize``'s logic)."""

    def __init__(
        self, model: ReportModel, batch_size: int, device: torch.device, precision: str, quantize: str | None
    ) -> None:
        from reportsup.discretize import Discretizer

        if quantize or precision not in ("32", "auto"):
            raise ValueError(
                "--quantize and --precision bf16/fp16 are implemented for report classifiers (ALARM, spine NLP); "
                "the discretizer labels in fp32."
            )
        self.discretizer = Discretizer(model, batch_size=batch_size, device=str(device))

    def label_chunk(self, chunk: pd.DataFrame) -> pd.DataFrame:
        return self.discretizer.label_chunk(chunk)

    def manifest(self) -> dict[str, Any]:
        m = self.discretizer.model.label_manifest()
        return {k: v for k, v in m.items() if k != "encoder"} | {
            "encoder": {k: v for k, v in m["encoder"].items() if k != "files"}
        }


def make_labeller(
    model: ReportModel,
    batch_size: int,
    device: torch.device,
    precision: str,
    quantize: str | None,
    compile: bool = False,
    batch_tokens: int | None = BATCH_TOKENS,
) -> ClassifierLabeller | DiscretizerLabeller:
    """The labeller of ``model``'s task (a report classifier or the discretizer)."""
    if model.TASK in CLASSIFIER_TASKS:
        return ClassifierLabeller(model, batch_size, device, precision, quantize, compile, batch_tokens)
    if compile:
        raise ValueError("--compile is implemented for report classifiers (ALARM, spine NLP).")
    return DiscretizerLabeller(model, batch_size, device, precision, quantize)


def agreement(fp32: ClassifierLabeller, fast: ClassifierLabeller, texts: Sequence[str]) -> dict[str, float]:
    """Share of reports whose thresholded labels (all labels of a report) agree between fp32 and the fast
    path (bf16/fp16 autocast or int8), and the largest probability gap."""
    a, b = fp32.probabilities(texts), fast.probabilities(texts)
    same = ((a > fp32.threshold) == (b > fast.threshold)).all(axis=1)
    return {
        "n": len(texts),
        "label_agreement": float(same.mean()),
        "max_abs_probability_difference": float(np.abs(a - b).max()),
    }


def default_device(shard: int) -> str:
    """One process per GPU: the GPU of this process's local rank (``SLURM_LOCALID`` under srun,
    ``LOCAL_RANK`` under torchrun), else of its shard, modulo the GPUs visible; the CPU without GPUs."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        return "cpu"
    local = os.environ.get("SLURM_LOCALID", os.environ.get("LOCAL_RANK", ""))
    return f"cuda:{(int(local) if local.isdigit() else shard) % n}"


def label_archive(
    checkpoint: str | Path,
    input_path: str | Path,
    out_dir: str | Path,
    chunk_size: int = 5000,
    batch_size: int = 64,
    shard: int = 0,
    shards: int = 1,
    precision: str = "auto",
    quantize: str | None = None,
    check_agreement: int = 500,
    device: str | None = None,
    progress: bool = True,
    encoding: str = "utf-8",
    compile: bool = False,
    batch_tokens: int | None = BATCH_TOKENS,
    trust_checkpoint: bool = False,
) -> dict[str, Any]:
    """Label ``input_path`` into ``out_dir`` (see the module docstring); returns counts and rates.
    ``checkpoint``: a run folder, a ``.ckpt`` or a ``reportsup-export`` folder."""
    input_path, out = Path(input_path), Path(out_dir)
    if not input_path.is_file():
        raise FileNotFoundError(f"{input_path}: archive not found.")
    source = model_source(checkpoint)
    if not 0 <= shard < shards:
        raise ValueError(f"--shard {shard} of --shards {shards}: the shard is 0..{shards - 1}.")
    dev = torch.device(device or default_device(shard))
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "32"
    sha = source.sha256
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    input_bytes = input_path.stat().st_size
    if manifest_path.exists():
        before = json.loads(manifest_path.read_text())
        if before["checkpoint_sha256"] != sha:
            raise FileExistsError(
                f"{out} holds labels of another checkpoint ({before['checkpoint']}, sha256 "
                f"{before['checkpoint_sha256'][:12]}...): use a new output folder."
            )
        # A rerun skips the parts already written, by chunk index: that is only the same set of report
        # ids when the archive and the chunk size are unchanged.
        then = (before.get("input"), before.get("input_bytes"), before.get("chunk_size"))
        now = (str(input_path.resolve()), input_bytes, chunk_size)
        if then != now:
            raise FileExistsError(
                f"{out} holds labels of {then[0]} ({then[1]} bytes) in chunks of {then[2]}; this run reads "
                f"{now[0]} ({now[1]} bytes) in chunks of {now[2]}. Resume with the same archive and "
                "--chunk-size, or use a new output folder."
            )
    model, _ = load_report_model(source.path, trust_checkpoint=trust_checkpoint)
    fast = quantize or precision != "32"
    # the fp32 reference keeps its own copy: --compile casts the weights in place, int8 replaces layers
    reference = copy.deepcopy(model) if fast and check_agreement else None
    labeller = make_labeller(model, batch_size, dev, precision, quantize, compile, batch_tokens)
    info: dict[str, Any] = {
        "checkpoint": str(source.path.resolve()),
        "checkpoint_sha256": sha,
        "label_manifest": labeller.manifest(),
        "input": str(input_path.resolve()),
        "input_bytes": input_bytes,
        "chunk_size": chunk_size,
        "shards": shards,
        "precision": precision,
        "quantize": quantize,
        "compile": compile,
        "batch_size": batch_size,
        "batch_tokens": batch_tokens,
    }
    first_chunk = None
    if reference is not None:
        first_chunk = next(read_chunks(input_path, chunk_size, encoding, undecodable="mark"))
        texts = check_rows(first_chunk, 0, set())[0]["text"].astype(str).tolist()[:check_agreement]
        fp32 = make_labeller(reference, batch_size, dev, "32", None, batch_tokens=batch_tokens)
        info["fp32_agreement"] = {"mode": quantize or precision, **agreement(fp32, labeller, texts)}
    if shard == 0 or not manifest_path.exists():
        tmp = manifest_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, manifest_path)
    total = count_rows(input_path)
    counts = {"reports": 0, "skipped_done": 0, "errors": 0}
    seen: set[str] = set()
    start = time.perf_counter()
    bar = tqdm(total=total, unit="report", disable=not progress, desc=f"label shard {shard}/{shards}")
    row = 0
    try:
        for index, chunk in enumerate(read_chunks(input_path, chunk_size, encoding, undecodable="mark")):
            n = len(chunk)
            missing = [c for c in ("report_id", "text") if c not in chunk.columns]
            if missing:
                raise ReportTableError(
                    f"{input_path}: missing column(s) {missing}; found {list(chunk.columns)}."
                )
            mine = index % shards == shard
            part = out / f"part-{index:06d}.parquet"
            valid, errors = check_rows(chunk, row, seen)
            row += n
            if not mine:
                bar.update(n)
                continue
            if part.exists():  # written by an earlier run: resumable
                counts["skipped_done"] += len(valid)
                bar.update(n)
                continue
            labelled = labeller.label_chunk(valid) if len(valid) else valid.iloc[:0]
            table = pa.Table.from_pandas(labelled, preserve_index=False)
            table = table.replace_schema_metadata(
                {**(table.schema.metadata or {}), b"reportsup_checkpoint_sha256": sha.encode()}
            )
            tmp = part.with_suffix(f".tmp{os.getpid()}")
            pq.write_table(table, tmp)
            if len(errors):
                err_path = out / f"errors-{index:06d}.csv"
                errors.to_csv(err_path, index=False)
            os.replace(tmp, part)  # the part appears only when complete
            counts["reports"] += len(labelled)
            counts["errors"] += len(errors)
            bar.update(n)
    finally:
        bar.close()
    counts["errors"] = merge_errors(out)  # this run's and earlier runs' (skipped chunks keep theirs)
    counts["seconds"] = time.perf_counter() - start
    counts["reports_per_second"] = counts["reports"] / max(counts["seconds"], 1e-9)
    counts["compile_seconds"] = getattr(labeller, "compile_seconds", 0.0)
    if "fp32_agreement" in info:
        counts["fp32_agreement"] = info["fp32_agreement"]
    return counts


def merge_errors(out: Path) -> int:
    """All per-chunk error lists in one ``errors.csv`` (rebuilt each run, in file order); their count."""
    parts = sorted(out.glob("errors-*.csv"))
    frames = [pd.read_csv(p) for p in parts]
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["row", "report_id", "reason"])
    )
    table.to_csv(out / "errors.csv", index=False)
    return len(table)
