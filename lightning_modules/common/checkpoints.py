"""Reading a Lightning checkpoint without unpickling: ``torch.load(weights_only=True)``, which restores
tensors and plain containers only, so that a checkpoint from elsewhere cannot run code when loaded.

It lives here, below the API, because the models' own ``from_checkpoint`` loaders use it;
:mod:`reportsup.api.loading` re-exports it for the Python API.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint that cannot be read with ``weights_only=True`` (it needs unpickling)."""


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", trust_checkpoint: bool = False
) -> dict[str, Any]:
    """The checkpoint's dictionary, read with ``torch.load(weights_only=True)``.

    Raises :class:`UnsafeCheckpointError` naming the Python object that would have to be unpickled
    when the file holds more than tensors and plain containers; ``trust_checkpoint=True`` then loads it
    with full unpickling (which can execute code: only for files you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if trust_checkpoint:
            return torch.load(path, map_location=map_location, weights_only=False)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"the Python object {found.group(1)}" if found else "Python objects beyond tensors"
        raise UnsafeCheckpointError(
            f"{path}: this checkpoint holds {what}, which only unpickling can restore, and unpickling a "
            "file can run arbitrary code; reportsup loads checkpoints with torch.load(weights_only=True). "
            "If you trust this file, pass trust_checkpoint=True (console scripts: --trust-checkpoint); "
            "better, export it once with `reportsup-export CKPT OUT_DIR` and load OUT_DIR, which never "
            "unpickles."
        ) from None
