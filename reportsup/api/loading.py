"""Where a trained model comes from, and how it is read without unpickling anything.

Every ``from_pretrained(path)`` of the Python API accepts three kinds of ``path`` (:func:`resolve`):

* a run folder ``outputs/<experiment>/<date>_<time>/``: its best checkpoint (``checkpoints/best-*.ckpt``,
  the paper's selection criterion, else ``last.ckpt``: :func:`reportsup.contracts.run_dir.best_checkpoint`);
* a Lightning checkpoint file (``.ckpt``);
* a folder written by ``reportsup-export`` (the Hugging Face layout: ``config.json`` + ``model.safetensors``
  + tokenizer files + ``README.md``).

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a
checkpoint from elsewhere cannot run code on load. A checkpoint that holds other Python objects (e.g. a
``functools.partial`` in its hyper-parameters) is refused with :class:`UnsafeCheckpointError`, unless
the caller passes ``trust_checkpoint=True`` for a file they trust. Exported folders are read with
``safetensors`` and ``json``: never pickle.

Exported-folder convention (shared by every API class): ``config.json`` holds the reportsup metadata
under the key :data:`REPORTSUP_KEY` (``task``, ``labels``, ``threshold``, ``label_manifest``, ...);
other top-level keys are free for a ``transformers`` config when the weights have a stock
``transformers`` layout (the spine report model).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lightning_modules.common.checkpoints import UnsafeCheckpointError, load_checkpoint
from reportsup.contracts.run_dir import best_checkpoint, checkpoints_dir

__all__ = [
    "EXPORTED_CONFIG",
    "EXPORTED_WEIGHTS",
    "MODEL_CARD",
    "REPORTSUP_KEY",
    "ModelSourceError",
    "UnsafeCheckpointError",
    "best_checkpoint",
    "is_exported",
    "load_checkpoint",
    "read_exported",
    "reportsup_config",
    "resolve",
    "save_exported",
]

#: the files of an exported folder (Hugging Face layout)
EXPORTED_CONFIG = "config.json"
EXPORTED_WEIGHTS = "model.safetensors"
MODEL_CARD = "README.md"
#: config.json key under which reportsup keeps its own metadata (label manifest, preprocessing, ...)
REPORTSUP_KEY = "reportsup"


class ModelSourceError(FileNotFoundError):
    """A path that is neither a run folder, a checkpoint nor an exported folder."""


def is_exported(path: str | Path) -> bool:
    """True for a folder written by ``reportsup-export`` (``config.json`` and ``model.safetensors``)."""
    path = Path(path)
    return path.is_dir() and (path / EXPORTED_CONFIG).is_file() and (path / EXPORTED_WEIGHTS).is_file()


def resolve(path: str | Path) -> Path:
    """The file or folder to load for ``path``: an exported folder as is, a ``.ckpt`` as is, a run
    folder -> its best checkpoint."""
    path = Path(path)
    if is_exported(path):
        return path
    if path.is_file():
        return path
    if path.is_dir() and checkpoints_dir(path).is_dir():
        return best_checkpoint(path)
    if path.is_dir():
        raise ModelSourceError(
            f"{path}: neither an exported model ({EXPORTED_CONFIG} + {EXPORTED_WEIGHTS}) nor a run folder "
            f"(with {checkpoints_dir(path).name}/). Pass a run folder, a .ckpt file or a reportsup-export folder."
        )
    raise ModelSourceError(f"{path}: not found (a run folder, a .ckpt file or a reportsup-export folder).")


def read_exported(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of an exported folder: ``config.json`` parsed, weights from safetensors."""
    folder = Path(folder)
    if not is_exported(folder):
        raise ModelSourceError(
            f"{folder}: not an exported model (needs {EXPORTED_CONFIG} and {EXPORTED_WEIGHTS})."
        )
    config = json.loads((folder / EXPORTED_CONFIG).read_text(encoding="utf-8"))
    if REPORTSUP_KEY not in config:
        raise ModelSourceError(
            f"{folder / EXPORTED_CONFIG}: no {REPORTSUP_KEY!r} key; the folder was not written by reportsup-export."
        )
    return config, load_file(folder / EXPORTED_WEIGHTS)


def reportsup_config(config: Mapping[str, Any], where: str = EXPORTED_CONFIG) -> dict[str, Any]:
    """The reportsup section of an exported ``config.json``."""
    try:
        return dict(config[REPORTSUP_KEY])
    except KeyError:
        raise ModelSourceError(
            f"{where}: no {REPORTSUP_KEY!r} key; not written by reportsup-export."
        ) from None


def save_exported(
    folder: str | Path,
    config: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    extra_files: Mapping[str, str | bytes] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``extra_files`` (name -> text or bytes: tokenizer
    files, the model card) into ``folder``, which must not exist or be empty (nothing is overwritten)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(
            f"{folder} exists and is not empty; export into a new folder (nothing is overwritten)."
        )
    if REPORTSUP_KEY not in config:
        raise ValueError(f"config for {folder} lacks the {REPORTSUP_KEY!r} section.")
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share memory (e.g. tied weights): store an own copy of each
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in state_dict.items()}
    save_file(tensors, folder / EXPORTED_WEIGHTS, metadata={"format": "pt"})
    (folder / EXPORTED_CONFIG).write_text(
        json.dumps(config, indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    for name, content in (extra_files or {}).items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    return folder
