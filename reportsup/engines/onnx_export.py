"""A report classifier (BERT encoder + attention pooling + MLP head) as an ONNX model for ONNX Runtime,
made once and cached (issue 23).

The whole classifier is exported, token ids and attention mask in, logits out, with dynamic batch and
sequence axes: ONNX Runtime then runs the same length-sorted batches as the torch path. The export uses
the TorchScript exporter on the encoder with eager attention (its graph is the one the transformer
optimizer's BERT patterns recognise: with SDPA, or through the dynamo exporter, no attention is fused);
:func:`onnxruntime.transformers.optimizer.optimize_model` (``model_type="bert"``) then fuses the
embeddings + layer norm, each self-attention, bias + GELU and skip + layer norm. ``quantize="int8"``
adds ONNX Runtime's dynamic quantisation (int8 weights, activations quantised per batch at run time).

Exports live in ``<cache>/onnx/<checkpoint sha256[:16]>-<settings key>/`` (:mod:`reportsup.engines.cache`):
the key covers the checkpoint's SHA-256 and every export setting (format version, opset, torch and
onnxruntime versions, quantisation), so another checkpoint, or another version of either library, makes
a new export instead of reusing a stale one. Files are written under temporary names and renamed when
complete, so concurrent shards never read half an export.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reportsup.engines.cache import cache_root, settings_key

#: bump when the exported graph changes for the same checkpoint and library versions
EXPORT_FORMAT = 1
OPSET = 17
#: encoder architectures the optimizer's ``model_type="bert"`` fusions fit (all of reportsup's encoders:
#: BioBERT, MiniLM, the demo's tiny BERT, the spine study's Italian BERT)
EXPORTABLE_MODEL_TYPES = ("bert",)


class ExportError(ValueError):
    """The checkpoint's model cannot run on ONNX Runtime; the message names the way out."""


def _onnxruntime_version() -> str:
    from reportsup.engines.onnxruntime_backend import require_onnxruntime

    return require_onnxruntime().__version__


def cpu_has_vnni() -> bool:
    """Whether this CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX): without one,
    ONNX Runtime's u8 x s8 kernels can saturate, and the weights are quantised to 7 bits instead."""
    from reportsup.engines.auto import cpu_signature

    flags = set(cpu_signature()["flags"])
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def export_settings(quantize: str | None) -> dict[str, Any]:
    """Every setting that makes the exported file what it is (the cache key, with the checkpoint hash)."""
    settings: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "opset": OPSET,
        "torch": torch.__version__,
        "onnxruntime": _onnxruntime_version(),
        "optimizer": "onnxruntime.transformers.optimizer.optimize_model(model_type='bert')",
        "quantize": quantize,
    }
    if quantize == "int8":
        settings["int8"] = {
            "weights": "QInt8",
            "per_channel": False,
            "reduce_range": not cpu_has_vnni(),
            "nodes": "the encoder's Attention and MatMul nodes (embeddings, pooling, head fp32)",
        }
    return settings


def check_exportable(model: torch.nn.Module) -> None:
    """Refuse, with the way out, a model the export does not cover: a report classifier on a BERT encoder."""
    encoder = getattr(getattr(model, "encoder", None), "model", None)
    model_type = getattr(getattr(encoder, "config", None), "model_type", None)
    if not hasattr(model, "classifier") or model_type not in EXPORTABLE_MODEL_TYPES:
        raise ExportError(
            f"--backend onnxruntime exports report classifiers on a BERT encoder; this checkpoint's model is "
            f"{type(model).__name__} with a {model_type or 'non-Hugging-Face'} encoder. Use --backend torch."
        )


class _Logits(torch.nn.Module):
    """The classifier as a function of (input_ids, attention_mask) only: what is exported."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask)


def export_onnx(model: torch.nn.Module, path: Path) -> None:
    """Export ``model`` (left unchanged: a fp32, eval-mode copy with eager attention is exported) to ``path``."""
    check_exportable(model)
    copy_ = copy.deepcopy(model).float().cpu().eval()
    hf = copy_.encoder.model
    if hasattr(hf, "set_attn_implementation"):
        hf.set_attn_implementation("eager")
    else:  # older transformers
        hf.config._attn_implementation = "eager"
    wrapper = _Logits(copy_).eval()  # eval: the exporter restores the training flag it finds afterwards
    # two reports of 16 tokens, the second padded: no dimension of size 1 to specialise on
    ids = torch.full((2, 16), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            wrapper,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def optimize_onnx(source: Path, target: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """The transformer optimizer's BERT fusions; returns the count of each fused operator."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    optimized.save_model_to_file(str(target))
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}


def quantize_onnx_int8(source: Path, target: Path, reduce_range: bool) -> int:
    """ONNX Runtime dynamic quantisation of the encoder: int8 weights of its fused Attention nodes and its
    MatMuls (activations quantised per batch at run time); the embeddings, the attention pooling and the
    MLP head (a negligible share of the work) stay fp32. Returns the count of quantised nodes.

    The fused model's contrib operators (Attention, SkipLayerNormalization) defeat ONNX's own shape
    inference, which the quantiser needs for every weight's type: ONNX Runtime's symbolic shape inference
    runs first."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = SymbolicShapeInference.infer_shapes(
        onnx.load(str(source)), auto_merge=True, guess_output_rank=True
    )
    nodes = [
        n.name
        for n in model.graph.node
        if n.op_type == "Attention" or (n.op_type == "MatMul" and "/encoder/" in n.name)
    ]
    inferred = target.with_name(f".inferred-{target.name}")
    root = logging.getLogger()
    level = root.level
    try:
        onnx.save(model, str(inferred))
        root.setLevel(logging.ERROR)  # the quantiser's advice to run the pre-processing just done
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(inferred),
                str(target),
                weight_type=QuantType.QInt8,
                reduce_range=reduce_range,
                nodes_to_quantize=nodes,
            )
    finally:
        root.setLevel(level)
        inferred.unlink(missing_ok=True)
    return len(nodes)


@dataclass
class OnnxExport:
    """A cached ONNX model: its file, whether this call reused it, what making it cost (now or then)."""

    path: Path
    reused: bool
    seconds: float  # spent in this call (export, optimisation, quantisation; ~0 when reused)
    record: dict[str, Any] = field(default_factory=dict)  # export.json: settings, fusions, build seconds


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def cached_onnx_model(
    model: torch.nn.Module,
    checkpoint_sha256: str,
    quantize: str | None = None,
    cache_dir: str | Path | None = None,
) -> OnnxExport:
    """The ONNX model of ``model`` (the checkpoint of hash ``checkpoint_sha256``), from the cache when an
    export with the same checkpoint and settings exists, else made now (export, optimise, quantise) and
    cached. int8 is made from the cached optimised fp32 model."""
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize {quantize!r}: ONNX Runtime's one quantisation here is int8.")
    check_exportable(model)
    settings = export_settings(quantize)
    folder = (
        cache_root(cache_dir)
        / "onnx"
        / f"{checkpoint_sha256[:16]}-{settings_key({'checkpoint_sha256': checkpoint_sha256, **settings})}"
    )
    target = folder / "model.onnx"
    record_path = folder / "export.json"
    if target.exists() and record_path.exists():
        return OnnxExport(target, True, 0.0, json.loads(record_path.read_text()))
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".model.onnx.tmp{os.getpid()}"
    record: dict[str, Any] = {"checkpoint_sha256": checkpoint_sha256, "settings": settings}
    try:
        if quantize == "int8":
            fp32 = cached_onnx_model(model, checkpoint_sha256, None, cache_dir)
            record["from"] = str(fp32.path)
            record["quantized_nodes"] = quantize_onnx_int8(fp32.path, tmp, settings["int8"]["reduce_range"])
        else:
            raw = folder / f".raw.onnx.tmp{os.getpid()}"
            try:
                t0 = time.perf_counter()
                export_onnx(model, raw)
                record["export_seconds"] = time.perf_counter() - t0
                config = model.encoder.model.config
                t0 = time.perf_counter()
                record["fused_operators"] = optimize_onnx(
                    raw, tmp, config.num_attention_heads, config.hidden_size
                )
                record["optimize_seconds"] = time.perf_counter() - t0
            finally:
                raw.unlink(missing_ok=True)
        os.replace(tmp, target)
    except ExportError:
        raise
    except Exception as err:  # an exporter or optimizer failure: name the way out
        raise ExportError(
            f"--backend onnxruntime: this checkpoint's model could not be exported to ONNX "
            f"({type(err).__name__}: {str(err)[:300]}). Use --backend torch."
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    record["build_seconds"] = time.perf_counter() - start
    _write_atomically(record_path, json.dumps(record, indent=2))
    return OnnxExport(target, False, record["build_seconds"], record)
