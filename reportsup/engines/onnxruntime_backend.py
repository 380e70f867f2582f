"""An ONNX Runtime session that :class:`reportsup.labelling.ClassifierLabeller` calls like the torch model:
token ids and attention mask (torch tensors, one length-sorted batch) in, logits (a torch tensor) out.
So the tokenisation, batching, thresholds, output columns and Parquet parts are the torch path's own."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

INSTALL_HINT = (
    "pip install onnxruntime==1.32.0 onnx==1.23.2 onnxscript==0.7.2 (the versions pyproject.toml pins; "
    "`pip install -e .` installs them), or label with --backend torch"
)


class BackendUnavailableError(ImportError):
    """The engine's package is not installed; the message names the install command."""


def require_package(name: str, backend: str, hint: str) -> ModuleType:
    """The module ``name``, or a :class:`BackendUnavailableError` naming ``--backend`` and the fix."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise BackendUnavailableError(f"--backend {backend} needs {name}: {hint}.") from err


def require_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or a :class:`BackendUnavailableError` naming the fix."""
    return require_package("onnxruntime", "onnxruntime", INSTALL_HINT)


def onnxruntime_available() -> bool:
    try:
        require_onnxruntime()
        import onnx  # noqa: F401  (the export needs it)
    except ImportError:
        return False
    return True


class OnnxRuntimeClassifier:
    """``logits = session(input_ids, attention_mask)`` on ONNX Runtime's CPU execution provider, with as many
    intra-op threads as torch uses (``torch.get_num_threads()``: ``OMP_NUM_THREADS`` / the cores given)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != ["attention_mask", "input_ids"]:
            raise ValueError(f"{path}: inputs {names}, expected input_ids and attention_mask.")

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feed = {
            "input_ids": input_ids.cpu().numpy().astype(np.int64, copy=False),
            "attention_mask": attention_mask.cpu().numpy().astype(np.int64, copy=False),
        }
        return torch.from_numpy(self.session.run(["logits"], feed)[0])
