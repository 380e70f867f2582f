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
(weights cast once to the precision's dtype instead of autocast). Whenever the labels do not come from fp32, the
labels written for the first ``--check-agreement`` reports a run labels are compared with fp32 and the
agreement recorded (``fp32_agreement`` in the manifest and ``runs.jsonl``).

The output folder is a labelling folder (:mod:`reportsup.contracts.label_folder`): the labels are a
Parquet dataset in ``<out>/parts/`` (one part per chunk, one pinned schema, written under a hidden
temporary name and renamed when complete) that ``pandas.read_parquet(out / "parts")``,
``pyarrow.dataset.dataset(out / "parts")`` and :func:`~reportsup.contracts.label_folder.read_label_folder`
read directly; beside it ``errors.csv`` (rows not labelled: empty text, text that is not valid UTF-8, no
report id, a repeated id; with file row number and reason), ``runs.jsonl`` (one record per run) and
``manifest.json``: the checkpoint's path, SHA-256 and label manifest and every setting that changes the
labels, so every training run on these labels knows which labeller made them (each part also carries
the SHA-256 in its Parquet metadata). The manifest is created together with the first part and never
rewritten; a rerun skips the parts already written, and a rerun whose output-changing settings differ
(another checkpoint, precision, int8, compile, max length, archive, chunk size, encoding, column map)
is refused, naming each difference. Output columns can be renamed (``--rename abnormal=alarm_abnormal``,
``--columns-map map.json``). ``--shards N`` splits the chunks over N processes
(a SLURM job array: the array task id picks the shard; ``srun`` with one task per GPU: the task's
SLURM_PROCID picks the shard and its SLURM_LOCALID the GPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from datamodules.common.tables import ReportTableError, count_rows, read_chunks, text_problem
from lightning_modules.common.label_manifest import label_thresholds
from lightning_modules.common.report_model import ReportModel
from reportsup.api.report_models import CLASSIFIER_TASKS, REPORT_MODELS, load_report_model, model_source
from reportsup.contracts import label_folder
from reportsup.engines import auto as engine_auto
from reportsup.engines.cache import use_stable_inductor_cache
from reportsup.engines.ctranslate2_backend import (
    CTranslate2Classifier,
    cached_conversion,
    ctranslate2_available,
)
from reportsup.engines.onnx_export import cached_onnx_model
from reportsup.engines.onnxruntime_backend import OnnxRuntimeClassifier, onnxruntime_available


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


def compiled_model(model: torch.nn.Module, precision: str, cache_dir: str | Path | None = None) -> Callable:
    """``torch.compile`` (inductor, dynamic shapes: one compilation serves every batch shape) with
    weight freezing, so that oneDNN prepacks the linear layers' weights once instead of at every call;
    under bf16/fp16 the weights are cast once. Measured on BERT-base, bf16, 2 CPU cores: 1.26x the eager
    bf16-weight encoder (BENCHMARKS.md). Freezing is a process-wide inductor setting: reportsup-label owns its
    process. Inductor's on-disk cache goes to the reportsup cache (``<cache>/inductor``, unless
    ``TORCHINDUCTOR_CACHE_DIR`` is set), so a later run reuses the compiled kernels."""
    import torch._inductor.config as inductor_config

    use_stable_inductor_cache(cache_dir)
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


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights (names, shapes, values): the export cache key of a model that did not
    come from a checkpoint file (the API's labellers)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


#: --backend values: torch (eager, or --compile), onnxruntime (the exported, fused model; CPU), ctranslate2
#: (its encoder, the head in torch; CPU), auto
BACKENDS = ("auto", "torch", "onnxruntime", "ctranslate2")
#: engines other than torch: CPU, fp32 or int8, the model converted once and cached
CONVERTED_BACKENDS = ("onnxruntime", "ctranslate2")


class ClassifierLabeller:
    """A reportsup report classifier (ALARM, spine NLP; one sigmoid output per label) applied to reports.

    ``backend="onnxruntime"`` runs the model exported to ONNX (made once and cached by ``checkpoint_sha256``
    and the export settings in ``engine_cache``: :mod:`reportsup.engines.onnx_export`) on ONNX Runtime, fp32
    or int8 (``quantize="int8"``); the tokenisation, batching, thresholds and columns are the same."""

    def __init__(
        self,
        model: ReportModel,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
        precision: str = "32",
        quantize: str | None = None,
        compile: bool = False,
        batch_tokens: int | None = BATCH_TOKENS,
        backend: str = "torch",
        checkpoint_sha256: str | None = None,
        engine_cache: str | Path | None = None,
    ) -> None:
        device = torch.device(device)
        if precision not in ("32", *HALF_DTYPES):
            raise ValueError(f"precision {precision!r}: choose 32, bf16 or fp16.")
        if backend not in ("torch", *CONVERTED_BACKENDS):
            raise ValueError(
                f"backend {backend!r}: choose torch, onnxruntime or ctranslate2 (auto is resolved by label_archive)."
            )
        self.model = model.to(device).eval()
        self.device, self.batch_size, self.precision = device, batch_size, precision
        self.batch_tokens = batch_tokens
        self.compile_seconds = 0.0
        self.setup_seconds = 0.0  # ONNX export/optimisation/quantisation, or loading it from the cache
        self.engine: dict[str, Any] = {}
        self.quantize = quantize
        self.backend = backend
        if backend in CONVERTED_BACKENDS:
            if device.type != "cpu":
                raise ValueError(f"--backend {backend} runs on the CPU here; on a GPU use --backend torch.")
            if precision != "32" or compile:
                raise ValueError(
                    f"--backend {backend} runs fp32, or int8 with --quantize int8; --precision bf16/fp16 and "
                    "--compile are torch's: use --backend torch for them."
                )
        if compile and quantize:
            raise ValueError("--compile and --quantize int8 do not combine; use --precision bf16 --compile.")
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize {quantize!r}: the one quantisation is int8.")
        if quantize == "int8" and backend == "torch":
            if device.type != "cpu":
                raise ValueError(
                    "--quantize int8 is dynamic quantisation for CPUs; on a GPU use --precision bf16."
                )
            if precision != "32":
                raise ValueError(
                    f"--quantize int8 with --precision {precision}: int8 layers run on fp32 activations; "
                    "drop --precision (or use --precision bf16 without --quantize)."
                )
            # A quantised copy (the caller's model stays fp32: the API exports it, the agreement check
            # compares with it). Bound below, after the swap: binding the forward function first ran the
            # fp32 model under an int8 manifest (issue 21, item 6).
            self.model = torch.ao.quantization.quantize_dynamic(
                self.model, {torch.nn.Linear}, dtype=torch.qint8
            )
        self.forward: Callable = self.model
        if backend == "onnxruntime":
            if quantize not in (None, "int8"):
                raise ValueError(f"quantize {quantize!r}: the one quantisation is int8.")
            start = time.perf_counter()
            sha = checkpoint_sha256 or weights_sha256(self.model)
            export = cached_onnx_model(self.model, sha, quantize, engine_cache)
            self.forward = OnnxRuntimeClassifier(export.path)
            self.setup_seconds = time.perf_counter() - start
            self.engine = {
                "onnx_model": str(export.path),
                "export_reused": export.reused,
                "export_seconds": export.seconds,
                "fused_operators": export.record.get("fused_operators"),
            }
        elif backend == "ctranslate2":
            if quantize not in (None, "int8"):
                raise ValueError(f"quantize {quantize!r}: the one quantisation is int8.")
            start = time.perf_counter()
            conversion = cached_conversion(
                self.model, checkpoint_sha256 or weights_sha256(self.model), engine_cache
            )
            self.forward = CTranslate2Classifier(self.model, conversion.path, quantize)
            self.setup_seconds = time.perf_counter() - start
            self.engine = {
                "ctranslate2_model": str(conversion.path),
                "export_reused": conversion.reused,
                "export_seconds": conversion.seconds,
                "compute_type": "int8" if quantize else "float32",
            }
        self.labels = list(self.model.labels)
        self.threshold = float(self.model.threshold)
        # per label: the threshold chosen on validation (model.threshold=validation, issue 22 item 3)
        # where the checkpoint's manifest has one, else the single threshold
        self.thresholds = label_thresholds(
            {
                "labels": self.labels,
                "threshold": self.threshold,
                "thresholds": {
                    k: v["threshold"]
                    for k, v in (getattr(self.model, "label_thresholds", None) or {}).items()
                },
            }
        )
        if compile:
            self.forward = compiled_model(self.model, precision, engine_cache)
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
            out[label] = (probs[:, j] > self.thresholds[label]).astype("int8")
        return out

    def manifest(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.label_manifest().items() if k != "encoder"} | {
            "encoder": {k: v for k, v in self.model.encoder.manifest().items() if k != "files"}
        }


class DiscretizerLabeller:
    """The Cross-DL discretizer applied to whole reports (``reportsup-discretize``'s logic)."""

    def __init__(
        self,
        model: ReportModel,
        batch_size: int,
        device: torch.device,
        precision: str,
        quantize: str | None,
        probabilities: bool = False,
    ) -> None:
        from reportsup.discretize import Discretizer

        if quantize or precision not in ("32", "auto"):
            raise ValueError(
                "--quantize and --precision bf16/fp16 are implemented for report classifiers (ALARM, spine NLP); "
                "the discretizer labels in fp32."
            )
        self.discretizer = Discretizer(model, batch_size=batch_size, device=str(device))
        self.probabilities = probabilities

    def label_chunk(self, chunk: pd.DataFrame) -> pd.DataFrame:
        return self.discretizer.label_chunk(chunk, self.probabilities)

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
    probabilities: bool = False,
    backend: str = "torch",
    checkpoint_sha256: str | None = None,
    engine_cache: str | Path | None = None,
) -> ClassifierLabeller | DiscretizerLabeller:
    """The labeller of ``model``'s task (a report classifier or the discretizer)."""
    if model.TASK in CLASSIFIER_TASKS:
        if probabilities:
            raise ValueError(
                "--probabilities is the discretizer's soft matrix; report classifiers always write <label>_prob."
            )
        return ClassifierLabeller(
            model,
            batch_size,
            device,
            precision,
            quantize,
            compile,
            batch_tokens,
            backend=backend,
            checkpoint_sha256=checkpoint_sha256,
            engine_cache=engine_cache,
        )
    if compile:
        raise ValueError("--compile is implemented for report classifiers (ALARM, spine NLP).")
    if backend != "torch":
        raise ValueError(
            f"--backend {backend} is implemented for report classifiers (ALARM, spine NLP); the discretizer "
            "runs on torch (--backend torch)."
        )
    return DiscretizerLabeller(model, batch_size, device, precision, quantize, probabilities)


def agreement(fp32: np.ndarray, fast: np.ndarray, threshold: float | np.ndarray) -> dict[str, float]:
    """Share of reports whose thresholded labels (all labels of a report) agree between fp32 probabilities
    and the fast path's (bf16/fp16 autocast or int8), and the largest probability gap.

    ``fast`` must be the probabilities the labeller *wrote*, not a second pass: int8 dynamic quantisation
    scales each batch's activations by that batch's range, so the same report gets other int8 outputs in
    another batch (issue 21, item 6: the recorded agreement is that of the labels in the parts).
    ``threshold``: one for all labels, or one per label column (thresholds chosen on validation)."""
    same = ((fp32 > threshold) == (fast > threshold)).all(axis=1)
    return {
        "n": len(fp32),
        "label_agreement": float(same.mean()) if len(fp32) else 1.0,
        "max_abs_probability_difference": float(np.abs(fp32 - fast).max()) if len(fp32) else 0.0,
    }


def default_device(shard: int) -> str:
    """One process per GPU: the GPU of this process's local rank (``SLURM_LOCALID`` under srun,
    ``LOCAL_RANK`` under torchrun), else of its shard, modulo the GPUs visible; the CPU without GPUs."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        return "cpu"
    local = os.environ.get("SLURM_LOCALID", os.environ.get("LOCAL_RANK", ""))
    return f"cuda:{(int(local) if local.isdigit() else shard) % n}"


def columns_map_from_options(
    renames: Sequence[str] = (), columns_map_file: str | Path | None = None
) -> dict[str, str]:
    """The output column map of ``--columns-map FILE.json`` (an object ``{"old": "new"}``) and
    ``--rename old=new`` options (later ones win); a clear message for a malformed option or file."""
    mapping: dict[str, str] = {}
    if columns_map_file is not None:
        path = Path(columns_map_file)
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"--columns-map {path}: file not found.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"--columns-map {path}: not JSON ({err}).") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise ValueError(
                f'--columns-map {path}: expected one JSON object of names, {{"old_name": "new_name", ...}}.'
            )
        mapping.update(loaded)
    for option in renames:
        old, sep, new = option.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ValueError(
                f"--rename {option!r}: write --rename OLD=NEW (e.g. --rename abnormal=alarm_abnormal)."
            )
        mapping[old.strip()] = new.strip()
    return mapping


def add_column_map_options(parser: argparse.ArgumentParser) -> None:
    """``--rename OLD=NEW`` (repeatable) and ``--columns-map FILE.json``: output columns renamed (issue 21,
    item 7); the options of ``reportsup-label`` and ``reportsup-discretize``."""
    parser.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="write output column OLD as NEW (repeatable; e.g. --rename abnormal=alarm_abnormal)",
    )
    parser.add_argument(
        "--columns-map", default=None, metavar="FILE.json", help='output columns renamed: {"old": "new", ...}'
    )


def first_chunk(input_path: Path, chunk_size: int, encoding: str) -> pd.DataFrame:
    """The archive's first chunk, its columns checked: nothing is labelled (and no manifest written) from an
    archive without ``report_id`` and ``text`` or without rows."""
    chunk = next(read_chunks(input_path, chunk_size, encoding, undecodable="mark"), None)
    if chunk is None or not len(chunk):
        raise ReportTableError(f"{input_path}: no rows to label (header only, or an empty file).")
    missing = [c for c in ("report_id", "text") if c not in chunk.columns]
    if missing:
        raise ReportTableError(
            f"{input_path}: missing column(s) {missing}; found {list(chunk.columns)}. "
            "An archive needs report_id and text."
        )
    return chunk


def resolve_backend(
    backend: str,
    device: torch.device,
    precision: str,
    quantize: str | None,
    compile: bool,
    model: ReportModel,
    checkpoint_sha256: str,
    texts: Sequence[str],
    out: Path,
    batch_size: int,
    batch_tokens: int | None,
    engine_cache: str | Path | None = None,
    calibration_reports: int = engine_auto.CALIBRATION_REPORTS,
    recalibrate: bool = False,
) -> tuple[str, str, str | None, bool, dict[str, Any] | None]:
    """``(backend, precision, quantize, compile, choice)``: ``--backend auto`` resolved for this machine.

    ``precision`` is the command's (``auto``, ``32``, ``bf16``, ``fp16``). On a GPU, for the discretizer, or
    with torch-only options (``--precision bf16/fp16``, ``--compile``) the choice is torch. A folder that
    already holds parts is resumed with the engine its manifest records. Otherwise the CPU's candidates
    (:func:`reportsup.engines.auto.cpu_candidates`; ``--precision 32``: fp32 paths only, ``--quantize int8``:
    int8 paths only) are calibrated on ``texts`` (reports spread over the first chunk) and the choice cached
    (:func:`reportsup.engines.auto.auto_choice`). ``choice`` (None unless ``auto``) records why."""
    resolved = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "32"
    explicit = precision if precision != "auto" else None
    precision = explicit or resolved
    if backend != "auto":
        return backend, precision, quantize, compile, None
    base = {"requested": "auto"}

    def torch_because(reason: str) -> tuple[str, str, str | None, bool, dict[str, Any]]:
        name = engine_auto.Candidate("torch", precision, quantize, compile).name
        return "torch", precision, quantize, compile, {**base, "name": name, "reason": reason}

    if device.type != "cpu":
        return torch_because(f"device {device}: torch (ONNX Runtime runs here on CPUs only)")
    if model.TASK not in CLASSIFIER_TASKS:
        return torch_because("the discretizer runs on torch")
    if compile or explicit in HALF_DTYPES:
        return torch_because("--precision bf16/fp16 or --compile asked for: torch's own options")
    recorded = label_folder.read_manifest(out)
    if recorded and label_folder.completed_parts(out):
        # resuming: the folder's engine (and its precision and int8 where this run does not name its own;
        # a setting this run names and the folder lacks is then refused, named, by check_settings)
        chosen = engine_auto.Candidate(
            recorded.get("backend", label_folder.IMPLIED_BEFORE_RECORDED["backend"]),
            explicit or recorded.get("precision", precision),
            quantize or recorded.get("quantize"),
            bool(recorded.get("compile", False)),
        )
        reason = f"resuming {out}: the engine its manifest records"
        return *astuple(chosen), {**base, "name": chosen.name, "reason": reason}
    ort, ct2 = onnxruntime_available(), ctranslate2_available()
    missing = [name for name, ok in (("onnxruntime", ort), ("ctranslate2", ct2)) if not ok]
    note = f"{' and '.join(missing)} not installed: not tried" if missing else None
    if ort or ct2:
        from reportsup.engines.onnx_export import ExportError, check_exportable

        try:
            check_exportable(model)
        except ExportError as err:
            ort, ct2, note = False, False, str(err)
    candidates = engine_auto.cpu_candidates(
        engine_auto.cpu_signature(), quantize, ort, exact_only=explicit == "32", ctranslate2=ct2
    )
    if len(candidates) == 1:
        c = candidates[0]
        return (
            c.backend,
            c.precision,
            c.quantize,
            c.compile,
            {**base, "name": c.name, "reason": note or "the only candidate"},
        )
    reference = ClassifierLabeller(model, batch_size, device, "32", None, batch_tokens=batch_tokens)
    thresholds = np.array([reference.thresholds[label] for label in reference.labels])

    def build(c: engine_auto.Candidate) -> ClassifierLabeller:
        # --compile casts the weights in place: its candidate gets a copy
        return ClassifierLabeller(
            copy.deepcopy(model) if c.compile else model,
            batch_size,
            device,
            c.precision,
            c.quantize,
            c.compile,
            batch_tokens,
            backend=c.backend,
            checkpoint_sha256=checkpoint_sha256,
            engine_cache=engine_cache,
        )

    record = engine_auto.auto_choice(
        candidates,
        build,
        engine_auto.calibration_texts(texts, calibration_reports),
        thresholds,
        {
            "checkpoint_sha256": checkpoint_sha256,
            "max_length": int(model.encoder.max_length),
            "batch_size": batch_size,
            "batch_tokens": batch_tokens,
            "calibration_reports": calibration_reports,
        },
        engine_cache,
        recalibrate,
    )
    c = record["chosen"]
    choice = {**base, **record} | ({"note": note} if note else {})
    return c["backend"], c["precision"], c["quantize"], bool(c["compile"]), choice


def auto_fallback(choice: dict[str, Any] | None, checked: dict[str, Any]) -> engine_auto.Candidate | None:
    """The fastest fp32 path of ``--backend auto``'s calibration when its reduced-precision choice gave
    fp32's labels on fewer than :data:`~reportsup.engines.auto.AGREEMENT_FLOOR` of the run's first
    ``--check-agreement`` reports (the calibration checks a few dozen reports; this check, hundreds); else None."""
    if (
        not choice
        or not choice.get("measurements")
        or checked["label_agreement"] >= engine_auto.AGREEMENT_FLOOR
    ):
        return None
    exact = [m for m in choice["measurements"] if m["exact"]]
    if not exact or choice["name"] in {m["name"] for m in exact}:
        return None
    best = max(exact, key=lambda m: m["reports_per_second"])
    return engine_auto.Candidate(best["backend"], best["precision"], best["quantize"], bool(best["compile"]))


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
    max_length: int | None = None,
    probabilities: bool = False,
    columns_map: dict[str, str] | None = None,
    tasks: Sequence[str] | None = None,
    backend: str = "torch",
    engine_cache: str | Path | None = None,
    calibration_reports: int = engine_auto.CALIBRATION_REPORTS,
    recalibrate: bool = False,
) -> dict[str, Any]:
    """Label ``input_path`` into the labelling folder ``out_dir`` (layout:
    :mod:`reportsup.contracts.label_folder`); returns counts and rates.

    ``checkpoint``: a run folder, a ``.ckpt`` or a ``reportsup-export`` folder. ``max_length``: truncate
    reports at fewer tokens than the encoder's maximum. ``probabilities``: the discretizer's soft matrix
    too. ``columns_map``: output columns renamed (``{"abnormal": "alarm_abnormal"}``; a name the labeller
    does not write is refused). ``tasks``: the model tasks accepted (``reportsup-discretize``: the
    discretizer's only). ``backend``: ``torch``, ``onnxruntime`` (CPU; the export cached in
    ``engine_cache``) or ``auto`` (:func:`resolve_backend`: measured on this CPU, cached; the command's
    default); the resolved engine is an output-changing setting of the manifest.

    Truthful records (issue 21, item 6): the settings that change outputs are checked against the folder's
    manifest before anything is labelled (a difference is refused, named); the manifest is created only
    together with the first part (a run that fails earlier leaves none); its ``fp32_agreement`` compares
    fp32 with the labeller that writes the parts (the int8 model itself under ``--quantize int8``)."""
    input_path, out = Path(input_path), Path(out_dir)
    if not input_path.is_file():
        raise FileNotFoundError(f"{input_path}: archive not found.")
    source = model_source(checkpoint)
    if not 0 <= shard < shards:
        raise ValueError(f"--shard {shard} of --shards {shards}: the shard is 0..{shards - 1}.")
    if max_length is not None and max_length < 2:
        raise ValueError(f"--max-length {max_length}: at least 2 tokens ([CLS] and [SEP]).")
    dev = torch.device(device or default_device(shard))
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}: choose one of {list(BACKENDS)}.")
    requested_precision = precision
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "32"
    sha = source.sha256
    columns_map = dict(columns_map or {})
    settings: dict[str, Any] = {
        "checkpoint": str(source.path.resolve()),  # named in messages; the hash is what is checked
        "checkpoint_sha256": sha,
        "input": str(input_path.resolve()),
        "input_bytes": input_path.stat().st_size,
        "chunk_size": chunk_size,
        "encoding": encoding,
        "backend": backend,  # replaced by the engine --backend auto chooses
        "precision": precision,
        "quantize": quantize,
        "compile": compile,
        "max_length": max_length,  # replaced by the effective length once the model is loaded
        "probabilities": probabilities,
        "columns_map": columns_map,
    }
    out.mkdir(parents=True, exist_ok=True)
    label_folder.check_layout(out)
    head = first_chunk(input_path, chunk_size, encoding)
    if tasks is None:
        model, _ = load_report_model(source.path, trust_checkpoint=trust_checkpoint)
    else:
        model, _ = load_report_model(source.path, trust_checkpoint=trust_checkpoint, allowed=tuple(tasks))
    encoder_max = int(model.encoder.max_length)
    settings["max_length"] = min(max_length, encoder_max) if max_length else encoder_max
    model.encoder.max_length = settings["max_length"]
    choice = None
    if backend == "auto":
        start = time.perf_counter()
        valid_head = check_rows(head, 0, set())[0]["text"].astype(str).tolist()
        backend, precision, quantize, compile, choice = resolve_backend(
            backend,
            dev,
            requested_precision,
            quantize,
            compile,
            model,
            sha,
            valid_head,
            out,
            batch_size,
            batch_tokens,
            engine_cache,
            calibration_reports,
            recalibrate,
        )
        choice["resolve_seconds"] = time.perf_counter() - start
        settings.update(backend=backend, precision=precision, quantize=quantize, compile=compile)
    # Before any labelling: a folder labelled with other settings is refused here, naming the differences.
    label_folder.check_settings(out, settings)
    fast = quantize or precision != "32" or backend != "torch"
    # the fp32 reference keeps its own copy: --compile casts the weights in place
    reference = copy.deepcopy(model) if fast and check_agreement else None
    labeller = make_labeller(
        model,
        batch_size,
        dev,
        precision,
        quantize,
        compile,
        batch_tokens,
        probabilities,
        backend=backend,
        checkpoint_sha256=sha,
        engine_cache=engine_cache,
    )
    columns = list(labeller.label_chunk(check_rows(head, 0, set())[0].iloc[:0]).columns)
    label_folder.check_columns_map(columns_map, columns)
    info: dict[str, Any] = {
        "layout": label_folder.LAYOUT,
        **settings,
        "label_manifest": labeller.manifest(),
        "shards": shards,
        "batch_size": batch_size,
        "batch_tokens": batch_tokens,
    }
    if choice is not None:
        info["backend_choice"] = choice
    if getattr(labeller, "engine", None):
        info["engine"] = labeller.engine
    fp32 = (
        None
        if reference is None
        else make_labeller(reference, batch_size, dev, "32", None, batch_tokens=batch_tokens)
    )
    del head
    total = count_rows(input_path)
    counts: dict[str, Any] = {"reports": 0, "skipped_done": 0, "errors": 0}
    seen: set[str] = set()
    start = time.perf_counter()
    pinned: pa.Schema | None = None
    recorded = label_folder.read_manifest(out)
    if recorded is not None and "schema" in recorded:
        pinned = label_folder.schema_from_text(recorded["schema"])
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
            where = f"{input_path}, rows {row + 2}-{row + n + 1} (part {index})"
            valid, errors = check_rows(chunk, row, seen)
            row += n
            if index % shards != shard or label_folder.part_path(out, index).exists():
                # another shard's chunk, or written by an earlier run (resumable)
                counts["skipped_done"] += len(valid) if index % shards == shard else 0
                bar.update(n)
                continue
            labelled = labeller.label_chunk(valid)
            if fp32 is not None and len(valid) and "fp32_agreement" not in info:
                # the first reports this run labels, compared with fp32 as written (before the column map)
                probs = [f"{label}_prob" for label in fp32.labels]
                m = min(check_agreement, len(valid))
                reference_probs = fp32.probabilities(valid["text"].astype(str).tolist()[:m])
                thresholds = np.array([fp32.thresholds[lb] for lb in fp32.labels])
                where_checked = {"mode": quantize or precision, "backend": backend, "part": index}
                written = labelled[probs].to_numpy(dtype=np.float32)[:m]
                info["fp32_agreement"] = where_checked | agreement(reference_probs, written, thresholds)
                fallback = auto_fallback(choice, info["fp32_agreement"])
                if fallback is not None:
                    # --backend auto's reduced-precision choice did not keep fp32's labels on this run's
                    # first reports: the fastest fp32 path calibrated labels instead, from this chunk on
                    assert reference is not None and choice is not None
                    choice["fallback"] = {"from": choice["name"], "agreement": info["fp32_agreement"]}
                    backend, precision, quantize, compile = astuple(fallback)
                    settings.update(backend=backend, precision=precision, quantize=quantize, compile=compile)
                    info.update(settings)
                    labeller = make_labeller(
                        copy.deepcopy(reference),
                        batch_size,
                        dev,
                        precision,
                        quantize,
                        compile,
                        batch_tokens,
                        backend=backend,
                        checkpoint_sha256=sha,
                        engine_cache=engine_cache,
                    )
                    info["engine"] = getattr(labeller, "engine", {})
                    engine_auto.record_fallback(choice, fallback)
                    labelled = labeller.label_chunk(valid)
                    where_checked = {"mode": quantize or precision, "backend": backend, "part": index}
                    written = labelled[probs].to_numpy(dtype=np.float32)[:m]
                    info["fp32_agreement"] = where_checked | agreement(reference_probs, written, thresholds)
            labelled = labelled.rename(columns=columns_map)
            table = pa.Table.from_pandas(labelled, preserve_index=False)
            table = table.replace_schema_metadata(
                {**(table.schema.metadata or {}), label_folder.CHECKPOINT_KEY: sha.encode()}
            )
            if pinned is None:
                pinned = label_folder.pin_schema(table.schema)
                table = label_folder.conform(table, pinned, where)
                tmp = label_folder.write_part(out, index, table)
                # The manifest exists only with a part: created once the first part is written, just
                # before it is committed. A concurrent shard may have created it first: then its settings
                # must be ours, and its schema rules.
                ours = {**info, "schema": label_folder.schema_to_text(pinned), "columns": pinned.names}
                recorded = label_folder.write_manifest_once(out, ours)
                if recorded != json.loads(json.dumps(ours)):
                    try:
                        label_folder.refuse_differences(out, recorded, settings)
                    except label_folder.LabelFolderError:
                        tmp.unlink(missing_ok=True)
                        raise
                    pinned = label_folder.schema_from_text(recorded["schema"])
                    tmp = label_folder.write_part(out, index, label_folder.conform(table, pinned, where))
            else:
                tmp = label_folder.write_part(out, index, label_folder.conform(table, pinned, where))
            label_folder.write_part_errors(out, index, errors)
            label_folder.commit_part(out, index, tmp)  # the part appears only when complete
            counts["reports"] += len(labelled)
            bar.update(n)
    finally:
        bar.close()
    counts["errors"] = label_folder.merge_errors(
        out
    )  # this run's and earlier runs' (skipped parts keep theirs)
    counts["seconds"] = time.perf_counter() - start
    counts["reports_per_second"] = counts["reports"] / max(counts["seconds"], 1e-9)
    counts["compile_seconds"] = getattr(labeller, "compile_seconds", 0.0)
    counts["setup_seconds"] = getattr(labeller, "setup_seconds", 0.0)  # ONNX export or its cached copy
    counts["backend"] = backend
    if choice is not None:
        counts["backend_choice"] = {
            k: choice[k] for k in ("name", "reason", "cached", "resolve_seconds") if k in choice
        }
    if "fp32_agreement" in info:
        counts["fp32_agreement"] = info["fp32_agreement"]
    label_folder.log_run(
        out,
        {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "shard": shard,
            "shards": shards,
            "device": str(dev),
            "batch_size": batch_size,
            "batch_tokens": batch_tokens,
            **settings,
            **{k: v for k, v in counts.items()},
        },
    )
    return counts
