"""Writing synthetic data sets once: a directory is reused only if it holds exactly what the same
generator arguments would write, and a directory the generator did not make is never touched.

Several processes may ask for the same data at once (the DDP ranks of one SLURM job each run
``demo=true``): a file lock beside the directory lets one write while the others wait and reuse it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

MARKER = "GENERATED_BY.txt"


def write_once(out_dir: str | Path, signature: str, write: Callable[[Path], None]) -> bool:
    """Call ``write(out_dir)`` unless ``out_dir`` already holds the data of ``signature``; True if written."""
    out = Path(out_dir)
    marker = out / MARKER
    out.parent.mkdir(parents=True, exist_ok=True)
    # Without the lock, a second rank would find the first rank's half-written folder (files, no
    # marker yet) and refuse it as user data.
    with FileLock(str(out.parent / f".{out.name}.lock")):
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
