"""Writing synthetic data sets once: a directory is reused only if it holds exactly what the same
generator arguments would write, and a directory the generator did not make is never touched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

MARKER = "GENERATED_BY.txt"


def write_once(out_dir: str | Path, signature: str, write: Callable[[Path], None]) -> bool:
    """Call ``write(out_dir)`` unless ``out_dir`` already holds the data of ``signature``; True if written."""
    out = Path(out_dir)
    marker = out / MARKER
    if marker.exists() and marker.read_text() == signature:
        return False
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise FileExistsError(
            f"{out} exists and was not written by the synthetic generator; choose an empty directory "
            "(nothing you made is overwritten)."
        )
    out.mkdir(parents=True, exist_ok=True)
    write(out)
    marker.write_text(signature)
    return True
