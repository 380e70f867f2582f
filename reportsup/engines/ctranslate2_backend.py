"""CTranslate2's encoder as an engine of :class:`reportsup.labelling.ClassifierLabeller` (issue 23): the BERT
encoder runs on CTranslate2 (fp32, or int8 weights quantised when loaded), its hidden states go through the
model's own attention pooling and MLP head in torch (CTranslate2 runs encoders, not this head). Called like
the torch model: token ids and attention mask of one length-sorted batch in, logits out.

The converted encoder is made once and cached in ``<cache>/ctranslate2/<checkpoint sha256[:16]>-<key>/``
(:mod:`reportsup.engines.cache`; the key covers the checkpoint's SHA-256, the converter format and the
ctranslate2 and transformers versions); int8 is a load-time ``compute_type`` of the same conversion.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from reportsup.engines.cache import cache_root, settings_key
from reportsup.engines.onnx_export import ExportError, check_exportable
from reportsup.engines.onnxruntime_backend import require_package

CONVERT_FORMAT = 1
INSTALL_HINT = (
    "pip install ctranslate2==4.8.5 (the version pyproject.toml pins; `pip install -e .` installs it), "
    "or label with --backend torch"
)
#: --quantize -> CTranslate2 compute type on the CPU
COMPUTE_TYPES = {None: "float32", "int8": "int8"}


def require_ctranslate2() -> ModuleType:
    """The ``ctranslate2`` module, or a :class:`BackendUnavailableError` naming the fix."""
    return require_package("ctranslate2", "ctranslate2", INSTALL_HINT)


def ctranslate2_available() -> bool:
    try:
        require_ctranslate2()
    except ImportError:
        return False
    return True


@dataclass
class Conversion:
    """A cached CTranslate2 model folder: whether this call reused it, what converting cost now."""

    path: Path
    reused: bool
    seconds: float
    record: dict[str, Any] = field(default_factory=dict)


def cached_conversion(
    model: torch.nn.Module, checkpoint_sha256: str, cache_dir: str | Path | None = None
) -> Conversion:
    """``model``'s encoder converted to CTranslate2, from the cache when converted before.

    transformers 5's ``BertConfig`` no longer has ``position_embedding_type``, which ctranslate2 4.8's
    converter asserts is ``"absolute"`` (the only kind BERT encoders here use); it is set on the saved
    config for the converter."""
    import transformers

    ct2 = require_ctranslate2()
    try:
        check_exportable(model)
    except ExportError as err:
        raise ExportError(str(err).replace("onnxruntime exports", "ctranslate2 converts")) from None
    settings = {
        "format": CONVERT_FORMAT,
        "ctranslate2": ct2.__version__,
        "transformers": transformers.__version__,
    }
    key = settings_key({"checkpoint_sha256": checkpoint_sha256, **settings})
    folder = cache_root(cache_dir) / "ctranslate2" / f"{checkpoint_sha256[:16]}-{key}"
    record_path = folder / "conversion.json"
    if record_path.exists() and (folder / "model").is_dir():
        return Conversion(folder / "model", True, 0.0, json.loads(record_path.read_text()))
    from ctranslate2.converters import TransformersConverter

    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    encoder = model.encoder
    config = encoder.model.config
    shim = not hasattr(config, "position_embedding_type")
    try:
        if shim:
            config.position_embedding_type = "absolute"
        encoder.model.save_pretrained(tmp / "hf")
        encoder.tokenizer.save_pretrained(tmp / "hf")
        TransformersConverter(str(tmp / "hf")).convert(str(tmp / "model"), quantization=None)
        os.replace(tmp / "model", folder / "model")
    except OSError:
        if not (folder / "model").is_dir():  # not a concurrent shard's finished conversion
            raise
    except Exception as err:
        raise ExportError(
            f"--backend ctranslate2: the encoder could not be converted ({type(err).__name__}: "
            f"{str(err)[:300]}). Use --backend torch or onnxruntime."
        ) from err
    finally:
        if shim:
            del config.position_embedding_type
        shutil.rmtree(tmp, ignore_errors=True)
    record = {
        "checkpoint_sha256": checkpoint_sha256,
        "settings": settings,
        "position_embedding_type_set_for_the_converter": shim,
        "convert_seconds": time.perf_counter() - start,
    }
    tmp_record = record_path.with_name(f".{record_path.name}.tmp{os.getpid()}")
    tmp_record.write_text(json.dumps(record, indent=2))
    os.replace(tmp_record, record_path)
    return Conversion(folder / "model", False, record["convert_seconds"], record)


class CTranslate2Classifier:
    """``logits = engine(input_ids, attention_mask)``: the encoder on CTranslate2 (CPU, as many threads as
    torch uses), attention pooling and MLP head of ``model`` in torch."""

    def __init__(self, model: torch.nn.Module, path: str | Path, quantize: str | None = None) -> None:
        ct2 = require_ctranslate2()
        if quantize not in COMPUTE_TYPES:
            raise ValueError(f"quantize {quantize!r}: CTranslate2 runs here fp32 or int8.")
        self.model = model
        self.encoder = ct2.Encoder(
            str(path),
            device="cpu",
            compute_type=COMPUTE_TYPES[quantize],
            intra_threads=torch.get_num_threads(),
        )

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = attention_mask.sum(dim=1).tolist()
        ids = [row[:n] for row, n in zip(input_ids.tolist(), lengths, strict=True)]
        hidden = torch.from_numpy(np.array(self.encoder.forward_batch(ids).last_hidden_state))
        mask = attention_mask[:, : hidden.shape[1]]
        pooled, _ = self.model.pooling(hidden, mask)
        return self.model.classifier(pooled)
