"""Where reportsup keeps what is worth keeping between labelling runs: ONNX exports, ``--backend auto``
calibrations and inductor's compiled kernels (``--compile``).

The root is ``$REPORTSUP_CACHE_DIR``, else ``$XDG_CACHE_HOME/reportsup``, else ``~/.cache/reportsup``
(``reportsup-label --engine-cache DIR`` overrides it for one run). Everything in it can be deleted: it is
rebuilt on the next run that needs it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV = "REPORTSUP_CACHE_DIR"


def cache_root(override: str | Path | None = None) -> Path:
    """The cache folder (created on use, not here)."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "reportsup"


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short, stable hash of ``settings`` (JSON, sorted keys): the name of what they made."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def use_stable_inductor_cache(override: str | Path | None = None) -> Path:
    """Point inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``) into the reportsup cache unless the user
    set it: inductor's default is ``/tmp/torchinductor_<user>``, which a reboot or another node of a cluster
    does not have. With frozen weights inductor bypasses its FX-graph cache, so a second ``--compile`` run
    still traces and lowers the model; measured on BERT-base (BENCHMARKS.md, time to first label) the second
    run's compilation took as long as the first's. Returns the folder in use."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        folder = cache_root(override) / "inductor"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
