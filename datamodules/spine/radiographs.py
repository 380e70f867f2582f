"""Reading planar radiographs (DICOM, PNG, JPEG, TIFF) as grey values in [0, 1], bone bright, and fusing
the coronal and sagittal views of one session into one RGB image (spine study, Figure 2).

DICOM: the modality LUT, then the file's own VOI windowing (Window Center/Width or a VOI LUT) when it
has one, else the stored range; MONOCHROME1 (bone dark) is inverted. 8-bit images are divided by 255;
16-bit images carry no window and are stretched to their own range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

DICOM_SUFFIXES = (".dcm", ".dicom", "")
GREEN_CHANNEL = ("zeros", "mean", "coronal", "sagittal")


class RadiographReadError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with path.open("rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _stretch(a: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((a - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def read_dicom_radiograph(path: Path) -> np.ndarray:
    """Grey values in [0, 1] with the file's windowing, bone bright."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    raw = ds.pixel_array
    if raw.ndim != 2:
        raise RadiographReadError(f"{path}: a {raw.ndim}-D pixel array; a radiograph is one 2-D frame.")
    values = apply_modality_lut(raw, ds).astype(np.float64)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        # pydicom maps the window onto the stored range [0, 2^BitsStored - 1] (unsigned output)
        windowed = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64)
        bits = int(getattr(ds, "BitsStored", 16))
        grey = _stretch(windowed, 0.0, float(2**bits - 1))
    else:
        grey = _stretch(values, float(values.min()), float(values.max()))
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        grey = 1.0 - grey  # MONOCHROME1: the minimum value is white; bone must be bright for the model
    return grey


def read_bitmap_radiograph(path: Path) -> np.ndarray:
    """PNG/JPEG/TIFF as grey values in [0, 1]."""
    with Image.open(path) as img:
        if img.mode in ("RGB", "RGBA", "P", "LA"):
            img = img.convert("L")
        a = np.asarray(img)
    if a.dtype == np.uint8:
        return (a / 255.0).astype(np.float32)
    a = a.astype(np.float64)
    return _stretch(a, float(a.min()), float(a.max()))


def read_radiograph(path: str | Path) -> np.ndarray:
    """One radiograph as a 2-D float32 array in [0, 1], bone bright; :class:`RadiographReadError` if the
    file cannot be decoded."""
    path = Path(path)
    try:
        return read_dicom_radiograph(path) if _is_dicom(path) else read_bitmap_radiograph(path)
    except RadiographReadError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, AttributeError, KeyError) as err:
        raise RadiographReadError(
            f"{path}: cannot be read as a radiograph ({type(err).__name__}: {err})."
        ) from err


def resize_view(grey: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``(1, H, W)`` tensor resized to ``size`` without keeping the aspect ratio (paper: "resized to
    512x512 without preserving the original aspect ratio"); antialiased bilinear."""
    t = torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)[0]


def fuse_views(coronal: torch.Tensor, sagittal: torch.Tensor, green: str = "zeros") -> torch.Tensor:
    """``(3, H, W)``: R = coronal, B = sagittal (Figure 2); G = ``zeros`` (the paper), the two views'
    ``mean``, or a copy of the ``coronal`` or ``sagittal`` view."""
    if green not in GREEN_CHANNEL:
        raise ValueError(f"data.green_channel={green!r}: choose one of {GREEN_CHANNEL}.")
    c, s = coronal.reshape(coronal.shape[-2:]), sagittal.reshape(sagittal.shape[-2:])
    g = {
        "zeros": lambda: torch.zeros_like(c),
        "mean": lambda: (c + s) / 2,
        "coronal": lambda: c.clone(),
        "sagittal": lambda: s.clone(),
    }[green]()
    return torch.stack([c, g, s])
